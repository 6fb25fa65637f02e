using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>Slurm's job states (squeue's <c>%T</c>, <c>job_state</c> in <c>squeue --json</c>, sacct's <c>State</c>) as <see cref="AppState"/>.</summary>
internal static class SlurmStates
{
    private static readonly Dictionary<string, AppState> s_states = new(StringComparer.OrdinalIgnoreCase)
    {
        // Waiting: not yet started, or sent back to the queue.
        ["PENDING"] = AppState.Pending,
        ["CONFIGURING"] = AppState.Pending,
        ["REQUEUED"] = AppState.Pending,
        ["REQUEUE_FED"] = AppState.Pending,
        ["REQUEUE_HOLD"] = AppState.Pending,
        ["RESV_DEL_HOLD"] = AppState.Pending,
        ["SUSPENDED"] = AppState.Pending,
        ["STOPPED"] = AppState.Pending,

        // Started and not yet over: COMPLETING runs the epilog before the final state is known.
        ["RUNNING"] = AppState.Running,
        ["COMPLETING"] = AppState.Running,
        ["RESIZING"] = AppState.Running,
        ["SIGNALING"] = AppState.Running,
        ["STAGE_OUT"] = AppState.Running,

        ["COMPLETED"] = AppState.Succeeded,

        ["CANCELLED"] = AppState.Cancelled,

        // Ended without success: the job's own failure, or the cluster's (limits, nodes, preemption without requeue).
        ["FAILED"] = AppState.Failed,
        ["TIMEOUT"] = AppState.Failed,
        ["NODE_FAIL"] = AppState.Failed,
        ["OUT_OF_MEMORY"] = AppState.Failed,
        ["PREEMPTED"] = AppState.Failed,
        ["BOOT_FAIL"] = AppState.Failed,
        ["DEADLINE"] = AppState.Failed,
        ["REVOKED"] = AppState.Failed,
        ["SPECIAL_EXIT"] = AppState.Failed,
    };

    /// <summary>
    /// Maps a Slurm state to an app state. Accepts sacct's decorated forms (<c>CANCELLED by 0</c>), squeue's short codes
    /// are not accepted; an unknown or empty state is <see cref="AppState.Unknown"/>.
    /// </summary>
    public static AppState ToAppState(string? slurmState)
    {
        if (string.IsNullOrWhiteSpace(slurmState))
        {
            return AppState.Unknown;
        }
        string word = slurmState.Trim();
        int space = word.IndexOfAny([' ', '+', ',']);
        if (space > 0)
        {
            word = word[..space];
        }
        return s_states.TryGetValue(word, out AppState state) ? state : AppState.Unknown;
    }

    /// <summary>The states this mapping knows, for the documentation and the tests.</summary>
    public static IReadOnlyDictionary<string, AppState> All => s_states;
}
