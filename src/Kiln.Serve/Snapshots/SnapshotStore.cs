using System.Globalization;
using System.Text.Json;
using Kiln.Serve.Hosting;
using Kiln.Serve.Inference;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Snapshots;

/// <summary>
/// TorchServe's config snapshots: after each state-changing management call the registered models (versions, default,
/// workers, batch settings, archive) are written to <c>&lt;time&gt;-&lt;seq&gt;-snapshot.json</c> in the snapshot folder by
/// write-then-rename; at start the newest readable snapshot is restored.
/// </summary>
internal sealed partial class SnapshotStore(string directory, ModelRegistry registry, ILogger logger)
{
    private const string Suffix = "-snapshot.json";
    private readonly Lock _gate = new();
    private long _sequence;

    public string Directory { get; } = Path.GetFullPath(directory);

    /// <summary>Writes the registry's current state as the newest snapshot.</summary>
    public void Write()
    {
        lock (_gate)
        {
            byte[] json = HttpIo.Json(WriteState);
            System.IO.Directory.CreateDirectory(Directory);
            string name = DateTime.UtcNow.ToString("yyyyMMddHHmmssfff", CultureInfo.InvariantCulture) + "-" +
                (++_sequence).ToString("D6", CultureInfo.InvariantCulture) + Suffix;
            string temp = Path.Combine(Directory, "." + name + ".tmp");
            File.WriteAllBytes(temp, json);
            File.Move(temp, Path.Combine(Directory, name), overwrite: true);
        }
    }

    private void WriteState(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        writer.WriteNumber("created", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        writer.WriteStartObject("models");
        foreach ((string model, _) in registry.List(0, int.MaxValue).Page)
        {
            IReadOnlyList<ModelVersionHost> hosts;
            try
            {
                hosts = registry.Describe(model, "all");
            }
            catch (ServeException)
            {
                continue; // unregistered meanwhile
            }
            writer.WriteStartObject(model);
            (string? Version, double Percent) canary = registry.CanaryOf(model);
            foreach (ModelVersionHost host in hosts)
            {
                writer.WriteStartObject(host.Version);
                writer.WriteBoolean("defaultVersion", registry.IsDefault(host));
                writer.WriteString("marName", host.Url);
                writer.WriteNumber("minWorkers", host.Settings.MinWorkers);
                writer.WriteNumber("maxWorkers", host.Settings.MaxWorkers);
                writer.WriteNumber("batchSize", host.Settings.BatchSize);
                writer.WriteNumber("maxBatchDelay", host.Settings.MaxBatchDelayMs);
                writer.WriteNumber("responseTimeout", host.Settings.ResponseTimeoutSeconds);
                if (host.Settings.PreferredBatchSizes.Count > 0)
                {
                    writer.WriteString("preferredBatchSizes", string.Join(",", host.Settings.PreferredBatchSizes));
                }
                if (host.Settings.MaxQueueDelayMicroseconds is { } queueDelay)
                {
                    writer.WriteNumber("maxQueueDelayMicroseconds", queueDelay);
                }
                if (canary.Version == host.Version)
                {
                    writer.WriteNumber("canaryWeight", canary.Percent);
                }
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    /// <summary>Restores the newest snapshot that parses (a corrupt one is skipped with a warning); false when there was none.</summary>
    public async Task<bool> RestoreAsync(CancellationToken cancellationToken)
    {
        if (!System.IO.Directory.Exists(Directory))
        {
            return false;
        }
        string[] files = [.. System.IO.Directory.GetFiles(Directory, "*" + Suffix).OrderDescending(StringComparer.Ordinal)];
        foreach (string file in files)
        {
            List<SnapshotVersion> versions;
            try
            {
                versions = Parse(await File.ReadAllBytesAsync(file, cancellationToken).ConfigureAwait(false));
            }
            catch (Exception ex) when (ex is JsonException or InvalidOperationException or KeyNotFoundException or FormatException)
            {
                CorruptSnapshot(logger, ex, file);
                continue;
            }
            await ApplyAsync(versions, cancellationToken).ConfigureAwait(false);
            Restored(logger, file, versions.Count);
            return true;
        }
        return false;
    }

    private static List<SnapshotVersion> Parse(byte[] json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        List<SnapshotVersion> versions = [];
        foreach (JsonProperty model in document.RootElement.GetProperty("models").EnumerateObject())
        {
            foreach (JsonProperty version in model.Value.EnumerateObject())
            {
                JsonElement v = version.Value;
                versions.Add(new SnapshotVersion(model.Name, version.Name, v.GetProperty("marName").GetString() ?? throw new FormatException("marName is null"),
                    v.GetProperty("defaultVersion").GetBoolean(), v.GetProperty("minWorkers").GetInt32(), v.GetProperty("maxWorkers").GetInt32(),
                    v.GetProperty("batchSize").GetInt32(), v.GetProperty("maxBatchDelay").GetInt32(), v.GetProperty("responseTimeout").GetInt32())
                {
                    PreferredBatchSizes = v.TryGetProperty("preferredBatchSizes", out JsonElement sizes) ? sizes.GetString() : null,
                    MaxQueueDelayMicroseconds = v.TryGetProperty("maxQueueDelayMicroseconds", out JsonElement delay) ? delay.GetInt32() : null,
                    CanaryWeight = v.TryGetProperty("canaryWeight", out JsonElement weight) ? weight.GetDouble() : 0,
                });
            }
        }
        return versions;
    }

    private async Task ApplyAsync(List<SnapshotVersion> versions, CancellationToken cancellationToken)
    {
        foreach (SnapshotVersion v in versions)
        {
            try
            {
                ModelVersionHost host = await registry.RegisterAsync(new RegisterRequest(v.MarName)
                {
                    ModelName = v.Model,
                    BatchSize = v.BatchSize,
                    MaxBatchDelayMs = v.MaxBatchDelay,
                    InitialWorkers = v.MinWorkers,
                    ResponseTimeoutSeconds = v.ResponseTimeout,
                    PreferredBatchSizes = ModelRegistry.ParseSizes(v.PreferredBatchSizes, "preferredBatchSizes in the snapshot"),
                    MaxQueueDelayMicroseconds = v.MaxQueueDelayMicroseconds,
                }, cancellationToken).ConfigureAwait(false);
                await host.ScaleAsync(v.MinWorkers, v.MaxWorkers, cancellationToken).ConfigureAwait(false);
            }
            catch (ServeException ex)
            {
                RestoreFailed(logger, ex, v.Model, v.Version);
            }
        }
        foreach (SnapshotVersion v in versions.Where(v => v.IsDefault))
        {
            try
            {
                registry.SetDefault(v.Model, v.Version);
            }
            catch (ServeException ex)
            {
                RestoreFailed(logger, ex, v.Model, v.Version);
            }
        }
        foreach (SnapshotVersion v in versions.Where(v => v.CanaryWeight > 0))
        {
            try
            {
                registry.SetCanary(v.Model, v.Version, v.CanaryWeight);
            }
            catch (ServeException ex)
            {
                RestoreFailed(logger, ex, v.Model, v.Version);
            }
        }
    }

    private sealed record SnapshotVersion(string Model, string Version, string MarName, bool IsDefault, int MinWorkers, int MaxWorkers, int BatchSize, int MaxBatchDelay, int ResponseTimeout)
    {
        public string? PreferredBatchSizes { get; init; }

        public int? MaxQueueDelayMicroseconds { get; init; }

        public double CanaryWeight { get; init; }
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Warning, Message = "Snapshot {File} is unreadable; trying the previous one")]
    private static partial void CorruptSnapshot(ILogger logger, Exception exception, string file);

    [LoggerMessage(EventId = 111, Level = LogLevel.Information, Message = "Restored {Versions} model versions from snapshot {File}")]
    private static partial void Restored(ILogger logger, string file, int versions);

    [LoggerMessage(EventId = 112, Level = LogLevel.Warning, Message = "Snapshot restore: model {Model} version {Version} could not be restored")]
    private static partial void RestoreFailed(ILogger logger, Exception exception, string model, string version);
}
