using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Kubernetes;

/// <summary>Where a <see cref="KubernetesScheduler"/> finds the cluster for calls that take no run options.</summary>
internal sealed record KubernetesSchedulerSettings
{
    /// <summary>A kubeconfig file for describe, logs, cancel and list (submit uses its <c>kubeconfig</c> option first); null: the default locations.</summary>
    public string? Kubeconfig { get; init; }

    /// <summary>The namespace <see cref="KubernetesScheduler.ListAsync"/> lists and app ids without one use. Default: <c>default</c>.</summary>
    public string Namespace { get; init; } = KubernetesObjects.DefaultNamespace;

    /// <summary>Where default kubeconfig locations are looked up.</summary>
    public KubeconfigLocator Locator { get; init; } = new();

    /// <summary>The clock for log time windows.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}

/// <summary>
/// The <c>kubernetes</c> scheduler: per role an Indexed batch/v1 Job and one headless Service per app (see
/// <see cref="KubernetesObjects"/>), submitted, described, logged, cancelled and listed through the API server with
/// KubernetesClient. App ids are <c>namespace:name</c>; handles <c>kubernetes://kiln/namespace:name</c>.
/// </summary>
/// <remarks>Thread-safe; each call opens its own client.</remarks>
internal sealed class KubernetesScheduler : IScheduler
{
    /// <summary>The scheduler's name.</summary>
    public const string SchedulerName = "kubernetes";

    /// <summary>The session part of handles.</summary>
    public const string Session = "kiln";

    private readonly KubernetesSchedulerSettings _settings;

    public KubernetesScheduler(KubernetesSchedulerSettings? settings = null) => _settings = settings ?? new KubernetesSchedulerSettings();

    /// <inheritdoc />
    public string Name => SchedulerName;

    /// <inheritdoc />
    public IReadOnlyList<RunOption> RunOptions => KubernetesRunOptions.Descriptions;

    /// <inheritdoc />
    public DryRunInfo SubmitDryRun(AppDef app, IReadOnlyDictionary<string, string> options)
    {
        ArgumentNullException.ThrowIfNull(app);
        KubernetesRunOptions parsed = KubernetesRunOptions.Parse(options);
        KubernetesApp objects = KubernetesObjects.Build(app, parsed);
        string yaml = objects.ToYaml();
        return new DryRunInfo(objects.AppId, app, yaml)
        {
            Artifacts = new Dictionary<string, string>(StringComparer.Ordinal) { ["objects.yaml"] = yaml },
            Options = parsed.ToDictionary(),
        };
    }

    /// <inheritdoc />
    /// <remarks>Creates the Jobs, then the Service owned by the first Job (deleted with it by the garbage collector).</remarks>
    public async Task<AppHandle> SubmitAsync(DryRunInfo request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        KubernetesApp app = KubernetesApp.FromYaml(request.Artifacts.TryGetValue("objects.yaml", out string? yaml) ? yaml : request.Request);
        request.Options.TryGetValue(KubernetesRunOptions.KubeconfigKey, out string? kubeconfig);
        using k8s.Kubernetes client = Connect(kubeconfig);
        var created = new List<V1Job>();
        try
        {
            foreach (V1Job job in app.Jobs)
            {
                created.Add(await client.BatchV1.CreateNamespacedJobAsync(job, app.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false));
            }
            V1Service service = app.Service;
            if (created[0].Metadata?.Uid is { Length: > 0 } uid)
            {
                service.Metadata.OwnerReferences = [new V1OwnerReference { ApiVersion = "batch/v1", Kind = "Job", Name = created[0].Metadata.Name, Uid = uid }];
            }
            await client.CoreV1.CreateNamespacedServiceAsync(service, app.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex)
        {
            // Nothing half-submitted: take back the Jobs already created.
            foreach (V1Job job in created)
            {
                await DeleteJobAsync(client, app.Namespace, job.Metadata.Name, CancellationToken.None).ConfigureAwait(false);
            }
            throw Refused("submit", app.AppId, ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(client, ex);
        }
        return new AppHandle(SchedulerName, Session, app.AppId);
    }

    /// <inheritdoc />
    public async Task<AppStatus?> DescribeAsync(string appId, CancellationToken cancellationToken)
    {
        (string ns, string name) = SplitAppId(appId);
        using k8s.Kubernetes client = Connect(null);
        try
        {
            V1JobList jobs = await client.BatchV1.ListNamespacedJobAsync(ns, labelSelector: $"{KubernetesObjects.AppIdLabel}={name}", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (jobs.Items.Count == 0)
            {
                return null;
            }
            V1PodList pods = await client.CoreV1.ListNamespacedPodAsync(ns, labelSelector: $"{KubernetesObjects.AppIdLabel}={name}", cancellationToken: cancellationToken).ConfigureAwait(false);
            return KubernetesStates.Describe(jobs.Items, pods.Items, name);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
        catch (HttpOperationException ex)
        {
            throw Refused("describe", appId, ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(client, ex);
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Kubernetes keeps one combined stream per container; <see cref="LogQuery.Stream"/> asks for stdout or stderr
    /// alone, which API servers with split log streams (1.32+, feature gate) honour and others ignore. Time windows use
    /// the API server's timestamps.
    /// </remarks>
    public async IAsyncEnumerable<string> LogAsync(string appId, string role, int? replica, LogQuery query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(role);
        ArgumentNullException.ThrowIfNull(query);
        (string ns, string name) = SplitAppId(appId);
        Regex? filter = query.Regex is null ? null : new Regex(query.Regex, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        bool timestamps = query.Since is not null || query.Until is not null;
        int? sinceSeconds = null;
        if (query.Since is { } since)
        {
            double seconds = (_settings.TimeProvider.GetUtcNow() - since).TotalSeconds;
            sinceSeconds = (int)Math.Clamp(Math.Ceiling(seconds) + 1, 1, int.MaxValue);
        }
        string? stream = query.Stream switch
        {
            null => null,
            "stdout" => "Stdout",
            "stderr" => "Stderr",
            _ => throw new LaunchException($"kubernetes: log stream \"{query.Stream}\" is not stdout or stderr."),
        };

        using k8s.Kubernetes client = Connect(null);
        List<(int Index, V1Pod Pod)> pods = await RolePodsAsync(client, ns, name, role, replica, cancellationToken).ConfigureAwait(false);
        foreach ((int _, V1Pod pod) in pods)
        {
            Stream body;
            try
            {
                body = await client.CoreV1.ReadNamespacedPodLogAsync(
                    pod.Metadata.Name, ns, follow: query.Tail, sinceSeconds: sinceSeconds, timestamps: timestamps, stream: stream,
                    cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (HttpOperationException ex)
            {
                throw Refused("log", appId, ex);
            }
            catch (HttpRequestException ex)
            {
                throw Unreachable(client, ex);
            }
            await using ConfiguredAsyncDisposable bodyScope = body.ConfigureAwait(false);
            using var reader = new StreamReader(body);
            while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
            {
                string text = line;
                if (timestamps)
                {
                    int space = line.IndexOf(' ', StringComparison.Ordinal);
                    if (space > 0 && DateTimeOffset.TryParse(line.AsSpan(0, space), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out DateTimeOffset at))
                    {
                        if ((query.Since is { } from && at < from) || (query.Until is { } until && at >= until))
                        {
                            continue;
                        }
                        text = line[(space + 1)..];
                    }
                }
                if (filter is null || filter.IsMatch(text))
                {
                    yield return text;
                }
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>Deletes the Jobs (their pods go with them) and the Service; an app whose Jobs have all finished is left as it is.</remarks>
    public async Task CancelAsync(string appId, CancellationToken cancellationToken)
    {
        (string ns, string name) = SplitAppId(appId);
        using k8s.Kubernetes client = Connect(null);
        try
        {
            V1JobList jobs = await client.BatchV1.ListNamespacedJobAsync(ns, labelSelector: $"{KubernetesObjects.AppIdLabel}={name}", cancellationToken: cancellationToken).ConfigureAwait(false);
            if (jobs.Items.Count == 0 || jobs.Items.All(j => KubernetesStates.JobState(j) is AppState.Succeeded or AppState.Failed))
            {
                return;
            }
            foreach (V1Job job in jobs.Items)
            {
                await DeleteJobAsync(client, ns, job.Metadata.Name, cancellationToken).ConfigureAwait(false);
            }
            try
            {
                await client.CoreV1.DeleteNamespacedServiceAsync(name, ns, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
            {
                // Already collected with its owner Job.
            }
        }
        catch (HttpOperationException ex)
        {
            throw Refused("cancel", appId, ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(client, ex);
        }
    }

    /// <inheritdoc />
    /// <remarks>The apps whose Jobs carry the <c>kiln.app-id</c> label in the settings' namespace.</remarks>
    public async Task<IReadOnlyList<ListedApp>> ListAsync(CancellationToken cancellationToken)
    {
        using k8s.Kubernetes client = Connect(null);
        V1JobList jobs;
        try
        {
            jobs = await client.BatchV1.ListNamespacedJobAsync(_settings.Namespace, labelSelector: KubernetesObjects.AppIdLabel, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex)
        {
            throw Refused("list", _settings.Namespace, ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(client, ex);
        }
        return
        [
            .. jobs.Items
                .Where(j => j.Metadata.Labels?.ContainsKey(KubernetesObjects.AppIdLabel) == true)
                .GroupBy(j => j.Metadata.Labels[KubernetesObjects.AppIdLabel], StringComparer.Ordinal)
                .OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => new ListedApp(
                    new AppHandle(SchedulerName, Session, $"{_settings.Namespace}:{g.Key}"),
                    KubernetesStates.AppStateOf([.. g.Select(KubernetesStates.JobState)]),
                    KubernetesObjects.Get(g.First().Metadata.Annotations, KubernetesObjects.AppNameAnnotation) ?? g.Key)),
        ];
    }

    /// <summary>Splits <c>namespace:name</c>; a bare name is in the settings' namespace.</summary>
    internal (string Namespace, string Name) SplitAppId(string appId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(appId);
        int colon = appId.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? (_settings.Namespace, appId) : (appId[..colon], appId[(colon + 1)..]);
    }

    private k8s.Kubernetes Connect(string? kubeconfig)
    {
        KubernetesClientConfiguration config = _settings.Locator.Load(kubeconfig ?? _settings.Kubeconfig);
        return new k8s.Kubernetes(config);
    }

    private static async Task<List<(int Index, V1Pod Pod)>> RolePodsAsync(k8s.Kubernetes client, string ns, string name, string role, int? replica, CancellationToken cancellationToken)
    {
        string selector = $"{KubernetesObjects.AppIdLabel}={name},{KubernetesObjects.RoleLabel}={KubernetesObjects.RoleLabelValue(role)}";
        V1PodList pods;
        try
        {
            pods = await client.CoreV1.ListNamespacedPodAsync(ns, labelSelector: selector, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex)
        {
            throw Refused("log", $"{ns}:{name}", ex);
        }
        catch (HttpRequestException ex)
        {
            throw Unreachable(client, ex);
        }
        // The newest pod of each index: earlier ones were replaced after failures.
        return
        [
            .. pods.Items
                .Select(p => (Index: KubernetesStates.ReplicaIndex(p), Pod: p))
                .Where(p => p.Index >= 0 && (replica is null || p.Index == replica))
                .GroupBy(p => p.Index)
                .Select(g => g.OrderByDescending(p => p.Pod.Metadata.CreationTimestamp ?? DateTime.MinValue).First())
                .OrderBy(p => p.Index),
        ];
    }

    private static async Task DeleteJobAsync(k8s.Kubernetes client, string ns, string job, CancellationToken cancellationToken)
    {
        try
        {
            await client.BatchV1.DeleteNamespacedJobAsync(job, ns, propagationPolicy: "Background", cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            // Gone already.
        }
    }

    private static LaunchException Refused(string verb, string appId, HttpOperationException ex)
    {
        string detail = ex.Response?.Content is { Length: > 0 } content ? content.Trim() : ex.Message;
        if (detail.Length > 500)
        {
            detail = detail[..500] + "…";
        }
        return new LaunchException($"kubernetes: {verb} {appId} refused by the API server ({(int?)ex.Response?.StatusCode}): {detail}", ex);
    }

    private static LaunchException Unreachable(k8s.Kubernetes client, HttpRequestException ex) =>
        new($"kubernetes: cannot reach the API server at {client.BaseUri}: {ex.Message}", ex);
}
