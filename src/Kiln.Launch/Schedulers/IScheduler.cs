using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers;

/// <summary>A scheduler-specific run option (<c>--scheduler-args k=v</c>, <c>.kilnconfig</c> <c>[scheduler]</c> keys).</summary>
public sealed record RunOption(string Name, string Help, string? Default = null, bool Required = false);

/// <summary>What a dry run produced: the request the scheduler would get, printable, and the data to submit it.</summary>
public sealed record DryRunInfo(string AppId, AppDef App, string Request)
{
    /// <summary>Scheduler-specific data the submit step uses (scripts, objects), keyed by name.</summary>
    public IReadOnlyDictionary<string, string> Artifacts { get; init; } = new Dictionary<string, string>();

    /// <summary>The resolved run options.</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();
}

/// <summary>Which log lines <see cref="IScheduler.LogAsync"/> returns.</summary>
public sealed record LogQuery
{
    /// <summary>Only lines that match this regular expression.</summary>
    public string? Regex { get; init; }

    /// <summary>Only lines written at or after this time (where the scheduler records times).</summary>
    public DateTimeOffset? Since { get; init; }

    /// <summary>Only lines written before this time.</summary>
    public DateTimeOffset? Until { get; init; }

    /// <summary>Keep following the log until the replica ends.</summary>
    public bool Tail { get; init; }

    /// <summary>Which stream: <c>stdout</c>, <c>stderr</c> or null for both, interleaved as written.</summary>
    public string? Stream { get; init; }
}

/// <summary>An app as <see cref="IScheduler.ListAsync"/> lists it.</summary>
public sealed record ListedApp(AppHandle Handle, AppState State, string Name);

/// <summary>A backend that runs apps: submit, describe, logs, cancel, list (TorchX's scheduler interface).</summary>
public interface IScheduler
{
    /// <summary>The scheduler's name in handles and <c>-s</c>, e.g. <c>local</c>.</summary>
    public string Name { get; }

    /// <summary>The run options this scheduler takes.</summary>
    public IReadOnlyList<RunOption> RunOptions { get; }

    /// <summary>Builds the request without submitting anything.</summary>
    /// <exception cref="LaunchException">Bad options or an app this scheduler cannot run.</exception>
    public DryRunInfo SubmitDryRun(AppDef app, IReadOnlyDictionary<string, string> options);

    /// <summary>Submits a dry run's request; returns the app's handle.</summary>
    public Task<AppHandle> SubmitAsync(DryRunInfo request, CancellationToken cancellationToken);

    /// <summary>The app's status; null when the scheduler does not know the app.</summary>
    public Task<AppStatus?> DescribeAsync(string appId, CancellationToken cancellationToken);

    /// <summary>Log lines of one replica (or of every replica of a role when <paramref name="replica"/> is null).</summary>
    public IAsyncEnumerable<string> LogAsync(string appId, string role, int? replica, LogQuery query, CancellationToken cancellationToken);

    /// <summary>Cancels the app; a finished app is left as it is.</summary>
    public Task CancelAsync(string appId, CancellationToken cancellationToken);

    /// <summary>The apps this scheduler knows.</summary>
    public Task<IReadOnlyList<ListedApp>> ListAsync(CancellationToken cancellationToken);
}
