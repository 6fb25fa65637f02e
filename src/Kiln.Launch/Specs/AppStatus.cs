namespace Kiln.Launch.Specs;

/// <summary>One replica as a scheduler sees it.</summary>
public sealed record ReplicaStatus(int Id, AppState State, string Role, string Hostname)
{
    /// <summary>The exit code of a finished replica process, where the scheduler knows it.</summary>
    public int? ExitCode { get; init; }
}

/// <summary>The replicas of one role.</summary>
public sealed record RoleStatus(string Role, IReadOnlyList<ReplicaStatus> Replicas);

/// <summary>What <c>kiln status</c> shows: the state, restarts, a message and, for failures, the first error.</summary>
public sealed record AppStatus(AppState State)
{
    /// <summary>Restarts so far (whole-group restarts for elastic jobs, counted per job).</summary>
    public int NumRestarts { get; init; }

    /// <summary>A human-readable message from the scheduler.</summary>
    public string Message { get; init; } = "";

    /// <summary>The first failure recorded in the error file (exit code or signal, last lines of stderr), if any.</summary>
    public string? StructuredError { get; init; }

    /// <summary>Per-role replica states.</summary>
    public IReadOnlyList<RoleStatus> Roles { get; init; } = [];
}
