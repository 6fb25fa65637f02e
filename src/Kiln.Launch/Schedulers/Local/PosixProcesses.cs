using System.Globalization;
using System.Runtime.InteropServices;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>A process named by its pid and its start time (clock ticks since boot, <c>/proc/PID/stat</c> field 22), so a reused pid is not mistaken for it.</summary>
/// <param name="Pid">The process id.</param>
/// <param name="StartTime">The start time in clock ticks since boot, or 0 when unknown.</param>
internal sealed record ProcessIdentity(int Pid, long StartTime);

/// <summary>The few POSIX calls the local scheduler needs: signals to process groups, start times and liveness from <c>/proc</c>.</summary>
internal static partial class PosixProcesses
{
    /// <summary>SIGKILL.</summary>
    public const int SigKill = 9;

    /// <summary>SIGTERM.</summary>
    public const int SigTerm = 15;

    private static readonly Lazy<string?> s_setsid = new(() => FindOnPath("setsid", Environment.GetEnvironmentVariable("PATH")));

    /// <summary>The <c>setsid</c> program (util-linux) that starts a process in a session and process group of its own; null when missing.</summary>
    public static string? Setsid => s_setsid.Value;

    /// <summary>The start time of <paramref name="pid"/> in clock ticks since boot; null when no such live process (zombies count as gone).</summary>
    public static long? StartTime(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        // pid (comm) state ppid … : comm may hold spaces and parentheses, so read after the last ')'.
        int close = text.LastIndexOf(')');
        if (close < 0)
        {
            return null;
        }
        string[] fields = text[(close + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
        if (fields.Length < 20 || fields[0] is "Z" or "X")
        {
            return null;
        }
        return long.TryParse(fields[19], NumberStyles.Integer, CultureInfo.InvariantCulture, out long ticks) ? ticks : null;
    }

    /// <summary>The identity of a live process, or null.</summary>
    public static ProcessIdentity? Identify(int pid) => StartTime(pid) is { } start ? new ProcessIdentity(pid, start) : null;

    /// <summary>True when the process still runs and is the same one (same start time).</summary>
    public static bool IsAlive(ProcessIdentity? process) =>
        process is not null && StartTime(process.Pid) is { } start && (process.StartTime == 0 || start == process.StartTime);

    /// <summary>Sends <paramref name="signal"/> to the process group <paramref name="groupId"/>; false when no process is left in it.</summary>
    public static bool SignalGroup(int groupId, int signal) => groupId > 1 && Kill(-groupId, signal) == 0;

    /// <summary>Sends <paramref name="signal"/> to one process; false when it is gone.</summary>
    public static bool Signal(int pid, int signal) => pid > 1 && Kill(pid, signal) == 0;

    /// <summary>True while any process of the group is left.</summary>
    public static bool GroupExists(int groupId) => groupId > 1 && Kill(-groupId, 0) == 0;

    /// <summary>The full path of an executable <paramref name="name"/> on <paramref name="path"/> (a PATH value); null when none.</summary>
    public static string? FindOnPath(string name, string? path)
    {
        foreach (string folder in (path ?? "/usr/local/bin:/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(folder, name);
            if (IsExecutableFile(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    /// <summary>True for an existing file with an execute bit.</summary>
    public static bool IsExecutableFile(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }
        UnixFileMode mode = File.GetUnixFileMode(path);
        return (mode & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0;
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);
}
