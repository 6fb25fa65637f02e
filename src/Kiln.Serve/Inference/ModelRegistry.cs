using Kiln.Serve.Archives;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Inference;

/// <summary>What <c>POST /models</c> asks for; null fields fall back to model-config.yaml, then to the server's defaults.</summary>
internal sealed record RegisterRequest(string Url)
{
    public string? ModelName { get; init; }

    public string? Handler { get; init; }

    public int? BatchSize { get; init; }

    public int? MaxBatchDelayMs { get; init; }

    public int? InitialWorkers { get; init; }

    public int? ResponseTimeoutSeconds { get; init; }

    public IReadOnlyList<int>? PreferredBatchSizes { get; init; }

    public int? MaxQueueDelayMicroseconds { get; init; }
}

/// <summary>Every registered model, its versions and its default version.</summary>
internal sealed class ModelRegistry : IAsyncDisposable
{
    private readonly SortedDictionary<string, ModelEntry> _models = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private readonly ServeOptions _options;
    private readonly ServeMetrics _metrics;
    private readonly ILogger _logger;
    private readonly string _workDirectory;

    public ModelRegistry(ServeOptions options, ServeMetrics metrics, ILogger logger)
    {
        _options = options;
        _metrics = metrics;
        _logger = logger;
        _workDirectory = options.WorkDirectory ?? Path.Combine(Path.GetTempPath(), $"kiln-serve-{Environment.ProcessId}-{Guid.NewGuid():N}");
    }

    public ServeMetrics Metrics => _metrics;

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _models.Count;
            }
        }
    }

    /// <summary>Extracts, loads and starts a model version.</summary>
    /// <exception cref="ServeException">400 bad archive or parameters, 409 version already registered.</exception>
    public async Task<ModelVersionHost> RegisterAsync(RegisterRequest request, CancellationToken cancellationToken)
    {
        string url = request.Url;
        if (url.Contains("://", StringComparison.Ordinal))
        {
            throw new ServeException(400, "DownloadArchiveException", $"Model url {url} is remote; this server loads archives only from its model store ({_options.ModelStore}). Copy the .mar there and pass its file name.");
        }
        if (url.Length == 0 || url.Contains('/', StringComparison.Ordinal) || url.Contains('\\', StringComparison.Ordinal) || url is "." or "..")
        {
            throw new ServeException(400, "DownloadArchiveException", $"Model url \"{url}\" must be a .mar file name in the model store, without folders.");
        }
        Directory.CreateDirectory(_workDirectory);
        ModelArchive archive = await Task.Run(() => ModelArchive.Extract(Path.Combine(_options.ModelStore, url), _workDirectory, _options.MaxArchiveSize), cancellationToken).ConfigureAwait(false);
        ModelVersionHost? host = null;
        try
        {
            string name = request.ModelName is { Length: > 0 } n ? n : archive.Manifest.ModelName;
            if (!ModelManifest.IsValidName(name))
            {
                throw ServeException.BadRequest($"Model name \"{name}\" must start with a letter and hold only letters, digits, '_', '-' and '.'.");
            }
            IReadOnlyDictionary<string, string> config = archive.Config;
            int workers = request.InitialWorkers ?? ModelArchive.ConfigInt(config, "minWorkers") ?? 0;
            var settings = new ModelSettings
            {
                BatchSize = request.BatchSize ?? ModelArchive.ConfigInt(config, "batchSize") ?? 1,
                MaxBatchDelayMs = request.MaxBatchDelayMs ?? ModelArchive.ConfigInt(config, "maxBatchDelay") ?? 100,
                JobQueueSize = ModelArchive.ConfigInt(config, "jobQueueSize") ?? _options.JobQueueSize,
                ResponseTimeoutSeconds = request.ResponseTimeoutSeconds ?? ModelArchive.ConfigInt(config, "responseTimeout") ?? _options.DefaultResponseTimeoutSeconds,
                MinWorkers = workers,
                MaxWorkers = Math.Max(workers, ModelArchive.ConfigInt(config, "maxWorkers") ?? workers),
                IntraOpThreads = _options.IntraOpThreads,
                MaxResponseSize = _options.MaxResponseSize,
                PreferredBatchSizes = request.PreferredBatchSizes ?? ParseSizes(ModelArchive.ConfigString(config, "preferredBatchSizes"), "preferredBatchSizes in model-config.yaml") ?? [],
                MaxQueueDelayMicroseconds = request.MaxQueueDelayMicroseconds ?? ModelArchive.ConfigInt(config, "maxQueueDelayMicroseconds"),
            };
            if (settings.BatchSize < 1 || settings.MaxBatchDelayMs < 0 || workers < 0 || settings.ResponseTimeoutSeconds < 1 || settings.JobQueueSize < 1)
            {
                throw ServeException.BadRequest("batch_size, job_queue_size and response_timeout must be at least 1; max_batch_delay and initial_workers at least 0.");
            }
            if (settings.PreferredBatchSizes.Any(size => size < 1 || size > settings.BatchSize) || settings.MaxQueueDelayMicroseconds < 0)
            {
                throw ServeException.BadRequest($"Preferred batch sizes must lie between 1 and batch_size ({settings.BatchSize}), and max_queue_delay_microseconds must be at least 0.");
            }
            string handlerName = request.Handler ?? archive.Manifest.Handler;
            var backend = new BackendOptions { IntraOpThreads = settings.IntraOpThreads, DeviceType = ModelArchive.ConfigString(config, "deviceType"), Logger = _logger };
            IModelHandler handler = await Task.Run(() => HandlerCatalog.Create(handlerName, new HandlerContext(archive, settings, backend) { Logger = _logger }), cancellationToken).ConfigureAwait(false);
            host = new ModelVersionHost(archive, name, url, handler, settings, _metrics, _logger);
            lock (_gate)
            {
                if (!_models.TryGetValue(name, out ModelEntry? entry))
                {
                    entry = new ModelEntry(host.Version);
                    _models.Add(name, entry);
                }
                if (!entry.Versions.TryAdd(host.Version, host))
                {
                    throw new ServeException(409, "ConflictStatusException", $"Model version {host.Version} is already registered for model {name}");
                }
            }
            await host.ScaleAsync(workers, settings.MaxWorkers, cancellationToken).ConfigureAwait(false);
            ServeLog.ModelRegistered(_logger, name, host.Version, url, handlerName, settings.BatchSize, settings.MaxBatchDelayMs, workers);
            return host;
        }
        catch
        {
            // The host owns the extracted folder once it exists; a 409 host was never added to the registry.
            if (host is not null)
            {
                host.Dispose();
            }
            else
            {
                ModelArchive.TryDelete(archive.Folder);
            }
            throw;
        }
    }

    /// <summary>Parses a preferred batch size list such as <c>4,8</c> or <c>[4, 8]</c>; null when <paramref name="text"/> is null.</summary>
    /// <exception cref="ServeException">400 naming <paramref name="source"/> for anything but positive integers.</exception>
    internal static int[]? ParseSizes(string? text, string source)
    {
        if (text is null)
        {
            return null;
        }
        string[] parts = text.Trim().TrimStart('[').TrimEnd(']').Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var sizes = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out sizes[i]) || sizes[i] < 1)
            {
                throw ServeException.BadRequest($"{source} must be a list of positive integers such as 4,8; \"{parts[i]}\" is not one.");
            }
        }
        return [.. sizes.Distinct().Order()];
    }

    /// <summary>The version to serve: the named one, or the default (or, for a share of requests, the canary).</summary>
    /// <exception cref="ServeException">404 unknown model or version.</exception>
    public ModelVersionHost Resolve(string model, string? version)
    {
        lock (_gate)
        {
            if (!_models.TryGetValue(model, out ModelEntry? entry))
            {
                throw ServeException.ModelNotFound(model);
            }
            string wanted = version
                ?? (entry.CanaryVersion is { } canary && entry.Versions.ContainsKey(canary) && Random.Shared.NextDouble() * 100 < entry.CanaryPercent
                    ? canary
                    : entry.DefaultVersion);
            return entry.Versions.TryGetValue(wanted, out ModelVersionHost? host) ? host : throw ServeException.VersionNotFound(model, wanted);
        }
    }

    /// <summary>The named version, every version (<c>all</c>) or the default one.</summary>
    public IReadOnlyList<ModelVersionHost> Describe(string model, string? version)
    {
        lock (_gate)
        {
            if (!_models.TryGetValue(model, out ModelEntry? entry))
            {
                throw ServeException.ModelNotFound(model);
            }
            if (version == "all")
            {
                return [.. entry.Versions.Values];
            }
        }
        return [Resolve(model, version)];
    }

    public bool IsDefault(ModelVersionHost host)
    {
        lock (_gate)
        {
            return _models.TryGetValue(host.Name, out ModelEntry? entry) && entry.DefaultVersion == host.Version;
        }
    }

    /// <summary>Models sorted by name from <paramref name="start"/>, at most <paramref name="limit"/>, each with its default version's url.</summary>
    public (IReadOnlyList<(string Name, string Url)> Page, int? Next) List(int start, int limit)
    {
        lock (_gate)
        {
            List<(string, string)> page = [.. _models.Skip(start).Take(limit).Select(m => (m.Key, m.Value.Versions[m.Value.DefaultVersion].Url))];
            return (page, start + limit < _models.Count ? start + limit : null);
        }
    }

    public void SetDefault(string model, string version)
    {
        lock (_gate)
        {
            if (!_models.TryGetValue(model, out ModelEntry? entry))
            {
                throw ServeException.ModelNotFound(model);
            }
            if (!entry.Versions.ContainsKey(version))
            {
                throw ServeException.VersionNotFound(model, version);
            }
            entry.DefaultVersion = version;
        }
        ServeLog.DefaultVersionSet(_logger, model, version);
    }

    /// <summary>
    /// Sends <paramref name="percent"/> % of the requests that name no version to <paramref name="version"/> instead of the
    /// default (a canary); 0 ends the split. Requests that name a version are never redirected.
    /// </summary>
    /// <exception cref="ServeException">404 unknown model or version; 400 a share outside [0, 100] or the default version itself.</exception>
    public void SetCanary(string model, string version, double percent)
    {
        if (!(percent >= 0 && percent <= 100))
        {
            throw ServeException.BadRequest($"weight must be a percentage between 0 and 100, got {percent.ToString(System.Globalization.CultureInfo.InvariantCulture)}.");
        }
        lock (_gate)
        {
            if (!_models.TryGetValue(model, out ModelEntry? entry))
            {
                throw ServeException.ModelNotFound(model);
            }
            if (!entry.Versions.ContainsKey(version))
            {
                throw ServeException.VersionNotFound(model, version);
            }
            if (version == entry.DefaultVersion && percent > 0)
            {
                throw ServeException.BadRequest($"Version {version} is the default version of model {model}; a canary must be another version.");
            }
            (entry.CanaryVersion, entry.CanaryPercent) = percent > 0 ? (version, percent) : (null, 0);
        }
    }

    /// <summary>The canary version of a model and its share in percent, or (null, 0).</summary>
    public (string? Version, double Percent) CanaryOf(string model)
    {
        lock (_gate)
        {
            return _models.TryGetValue(model, out ModelEntry? entry) ? (entry.CanaryVersion, entry.CanaryPercent) : (null, 0);
        }
    }

    /// <summary>Removes a version (the default one when none is named) so that no new request reaches it, then drains it.</summary>
    /// <exception cref="ServeException">404 unknown; 403 the default version while others exist; 408 drain timeout.</exception>
    public async Task<ModelVersionHost> UnregisterAsync(string model, string? version, CancellationToken cancellationToken)
    {
        ModelVersionHost host;
        lock (_gate)
        {
            if (!_models.TryGetValue(model, out ModelEntry? entry))
            {
                throw ServeException.ModelNotFound(model);
            }
            string wanted = version ?? entry.DefaultVersion;
            if (!entry.Versions.TryGetValue(wanted, out host!))
            {
                throw ServeException.VersionNotFound(model, wanted);
            }
            if (wanted == entry.DefaultVersion && entry.Versions.Count > 1)
            {
                throw new ServeException(403, "InvalidModelVersionException", $"Cannot remove default version for model {model}");
            }
            entry.Versions.Remove(wanted);
            if (entry.Versions.Count == 0)
            {
                _models.Remove(model);
            }
        }
        try
        {
            await host.DrainAsync(cancellationToken).WaitAsync(TimeSpan.FromSeconds(_options.UnregisterTimeoutSeconds), cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new ServeException(408, "RequestTimeoutException", $"Model {model} version {host.Version} did not drain within {_options.UnregisterTimeoutSeconds} s; it no longer takes requests and unloads when its workers finish.", ex);
        }
        return host;
    }

    /// <summary>Drains every model version (shutdown).</summary>
    public async ValueTask DisposeAsync()
    {
        List<ModelVersionHost> hosts;
        lock (_gate)
        {
            hosts = [.. _models.Values.SelectMany(m => m.Versions.Values)];
            _models.Clear();
        }
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(_options.UnregisterTimeoutSeconds));
        try
        {
            await Task.WhenAll(hosts.Select(h => h.DrainAsync(timeout.Token))).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Shutdown goes on; the workers are background threads.
        }
        if (_options.WorkDirectory is null)
        {
            ModelArchive.TryDelete(_workDirectory);
        }
    }

    private sealed class ModelEntry(string defaultVersion)
    {
        public Dictionary<string, ModelVersionHost> Versions { get; } = new(StringComparer.Ordinal);

        public string DefaultVersion { get; set; } = defaultVersion;

        public string? CanaryVersion { get; set; }

        public double CanaryPercent { get; set; }
    }
}
