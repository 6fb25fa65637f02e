namespace Kiln.Launch.Specs;

/// <summary>The life of an app, with TorchX's names and numbers.</summary>
public enum AppState
{
    /// <summary>Not submitted yet (a dry run).</summary>
    Unsubmitted = 0,

    /// <summary>Accepted by the scheduler, not yet queued.</summary>
    Submitted = 1,

    /// <summary>Waiting for resources.</summary>
    Pending = 2,

    /// <summary>At least one replica runs.</summary>
    Running = 3,

    /// <summary>Every replica exited with 0.</summary>
    Succeeded = 4,

    /// <summary>A replica failed and no retry is left.</summary>
    Failed = 5,

    /// <summary>Cancelled by a user.</summary>
    Cancelled = 6,

    /// <summary>The scheduler cannot say.</summary>
    Unknown = 7,
}

/// <summary>Helpers for <see cref="AppState"/>.</summary>
public static class AppStates
{
    /// <summary>True for the states an app never leaves: succeeded, failed, cancelled.</summary>
    public static bool IsTerminal(this AppState state) => state is AppState.Succeeded or AppState.Failed or AppState.Cancelled;

    /// <summary>TorchX's upper-case name, e.g. <c>RUNNING</c>.</summary>
    public static string ToDisplay(this AppState state) => state.ToString().ToUpperInvariant();
}
