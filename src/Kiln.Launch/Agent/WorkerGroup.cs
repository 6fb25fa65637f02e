using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Kiln.Launch.Agent;

/// <summary>How one worker ended badly.</summary>
/// <param name="LocalRank">LOCAL_RANK.</param>
/// <param name="Rank">RANK.</param>
/// <param name="ExitCode">The exit status (128 + N when ended by signal N, as shells report it).</param>
/// <param name="Signal">The signal's name when the status is 128 + a signal number, else null.</param>
/// <param name="Timestamp">When the agent noticed.</param>
/// <param name="StderrTail">The worker's last lines of stderr.</param>
/// <param name="ErrorFile">The worker's TORCHELASTIC_ERROR_FILE (read back if the worker wrote it).</param>
internal sealed record WorkerFailure(int LocalRank, int Rank, int ExitCode, string? Signal, DateTimeOffset Timestamp, IReadOnlyList<string> StderrTail, string ErrorFile);

/// <summary>The state of a local worker group.</summary>
internal enum WorkerGroupState
{
    /// <summary>Some workers still run, none failed.</summary>
    Healthy,

    /// <summary>Every worker exited 0.</summary>
    Succeeded,

    /// <summary>A worker exited non-zero.</summary>
    Failed,
}

/// <summary>
/// The nproc-per-node worker processes of one round: started with torchrun's environment, stderr (and stdout with a
/// log folder) pumped to files or the agent's streams, the last lines of stderr kept for the error file.
/// </summary>
/// <remarks>Not thread-safe: the agent's monitor loop owns it. Dispose (or <see cref="StopAsync"/>) ends every worker.</remarks>
internal sealed partial class WorkerGroup : IAsyncDisposable
{
    /// <summary>Lines of stderr kept per worker for the error file.</summary>
    public const int StderrTailLines = 20;

    /// <summary>Lines of mpirun's stderr kept for the error file: its own report takes about a dozen.</summary>
    public const int MpirunStderrTailLines = 40;

    private readonly List<Worker> _workers = [];
    private IReadOnlyList<int>? _mpirunRanks;
    private IReadOnlyList<string>? _mpirunErrorFiles;

    private WorkerGroup()
    {
    }

    /// <summary>The workers' process ids, by local rank.</summary>
    public IReadOnlyList<int> ProcessIds => [.. _workers.Select(w => w.Process.Id)];

    /// <summary>Starts the workers, one process each.</summary>
    /// <param name="entrypoint">The program and its arguments.</param>
    /// <param name="environments">One environment (added to the agent's own; null removes a variable) per local rank.</param>
    /// <param name="ranks">RANK per local rank.</param>
    /// <param name="logDirectory">The folder of this attempt's logs (<c>LOCAL_RANK/stdout.log</c>, <c>stderr.log</c>), or null to inherit the agent's streams.</param>
    /// <param name="errorFiles">TORCHELASTIC_ERROR_FILE per local rank.</param>
    public static WorkerGroup Start(IReadOnlyList<string> entrypoint, IReadOnlyList<IReadOnlyDictionary<string, string?>> environments, IReadOnlyList<int> ranks, string? logDirectory, IReadOnlyList<string> errorFiles)
    {
        ArgumentNullException.ThrowIfNull(entrypoint);
        ArgumentNullException.ThrowIfNull(environments);
        var group = new WorkerGroup();
        try
        {
            for (int localRank = 0; localRank < environments.Count; localRank++)
            {
                ProcessStartInfo start = StartInfo(entrypoint[0], entrypoint.Skip(1), logDirectory is not null);
                foreach ((string name, string? value) in environments[localRank])
                {
                    if (value is null)
                    {
                        start.Environment.Remove(name);
                    }
                    else
                    {
                        start.Environment[name] = value;
                    }
                }
                string? folder = LogFolder(logDirectory, localRank.ToString(CultureInfo.InvariantCulture));
                PrepareErrorFile(errorFiles[localRank]);
                Process process = StartProcess(start, entrypoint[0]);
                group._workers.Add(new Worker(process, localRank, ranks[localRank], folder, errorFiles[localRank], StderrTailLines));
            }
        }
        catch
        {
            group.KillAll();
            throw;
        }
        return group;
    }

    /// <summary>
    /// Starts the workers as one MPI world: a single <c>mpirun</c> with Open MPI's MPMD syntax, one app context
    /// (<c>-np 1 -x NAME=VALUE … PROGRAM ARGS</c>) per local rank, so that each rank keeps its own environment. The
    /// group then watches mpirun, which ends the whole job when a rank fails and exits with that rank's status.
    /// </summary>
    /// <param name="entrypoint">The program and its arguments.</param>
    /// <param name="environments">One environment per local rank; null values are removed from mpirun's own environment.</param>
    /// <param name="ranks">RANK per local rank (equal to the local rank: mpirun runs one node).</param>
    /// <param name="logDirectory">The folder of this attempt's logs (<c>mpirun/stdout.log</c>, <c>stderr.log</c>, every rank's lines), or null to inherit the agent's streams.</param>
    /// <param name="errorFiles">TORCHELASTIC_ERROR_FILE per local rank.</param>
    public static WorkerGroup StartUnderMpirun(IReadOnlyList<string> entrypoint, IReadOnlyList<IReadOnlyDictionary<string, string?>> environments, IReadOnlyList<int> ranks, string? logDirectory, IReadOnlyList<string> errorFiles)
    {
        ArgumentNullException.ThrowIfNull(entrypoint);
        ArgumentNullException.ThrowIfNull(environments);
        var group = new WorkerGroup();
        ProcessStartInfo start = StartInfo("mpirun", MpirunArguments(entrypoint, environments, IsRoot()), logDirectory is not null);
        foreach (string name in environments.SelectMany(e => e).Where(p => p.Value is null).Select(p => p.Key).Distinct(StringComparer.Ordinal))
        {
            start.Environment.Remove(name);
        }
        foreach (string errorFile in errorFiles)
        {
            PrepareErrorFile(errorFile);
        }
        string? folder = LogFolder(logDirectory, "mpirun");
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new LaunchException("Could not start mpirun.");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new LaunchException($"--launcher mpirun: could not start mpirun ({ex.Message}); install Open MPI (openmpi-bin) or put its mpirun on PATH.", ex);
        }
        group._mpirunRanks = ranks;
        group._mpirunErrorFiles = errorFiles;
        group._workers.Add(new Worker(process, -1, -1, folder, "", MpirunStderrTailLines));
        return group;
    }

    /// <summary>
    /// mpirun's arguments for <see cref="StartUnderMpirun"/>: <c>[--allow-run-as-root] --oversubscribe --bind-to none</c>,
    /// local launching only (<c>--mca plm isolated</c>, no resource-manager allocation), then per local rank <c>-np 1 -x NAME=VALUE… PROGRAM ARGS</c>, the contexts separated by <c>:</c>.
    /// </summary>
    internal static List<string> MpirunArguments(IReadOnlyList<string> entrypoint, IReadOnlyList<IReadOnlyDictionary<string, string?>> environments, bool asRoot)
    {
        var arguments = new List<string>();
        if (asRoot)
        {
            arguments.Add("--allow-run-as-root");
        }
        // Binding is left to the program, as with the process launcher (Open MPI binds each rank to a core by default).
        arguments.AddRange(["--oversubscribe", "--bind-to", "none"]);
        // The workers are this node's: inside a Slurm (or other) allocation mpirun would otherwise place ranks on the
        // allocation's nodes and start daemons there.
        arguments.AddRange(["--mca", "plm", "isolated", "--mca", "ras", "^slurm,gridengine,tm,lsf,simulator"]);
        for (int localRank = 0; localRank < environments.Count; localRank++)
        {
            if (localRank > 0)
            {
                arguments.Add(":");
            }
            arguments.AddRange(["-np", "1"]);
            foreach ((string name, string? value) in environments[localRank].Where(p => p.Value is not null).OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                arguments.AddRange(["-x", $"{name}={value}"]);
            }
            arguments.AddRange(entrypoint);
        }
        return arguments;
    }

    /// <summary>The group's state now; the first failed worker (lowest local rank among those that failed) when failed.</summary>
    public (WorkerGroupState State, WorkerFailure? Failure) Poll()
    {
        Worker? failed = null;
        bool allDone = true;
        foreach (Worker worker in _workers)
        {
            if (!worker.Process.HasExited)
            {
                allDone = false;
                continue;
            }
            worker.ExitedAt ??= DateTimeOffset.UtcNow;
            if (worker.Process.ExitCode != 0 && (failed is null || worker.ExitedAt < failed.ExitedAt))
            {
                failed = worker;
            }
        }
        if (failed is not null)
        {
            // Its last lines of stderr may still be in the pipe when the exit is seen; they belong in the error file.
            failed.DrainAsync().GetAwaiter().GetResult();
            return (WorkerGroupState.Failed, _mpirunRanks is null ? failed.Describe() : DescribeMpirunFailure(failed));
        }
        return (allDone ? WorkerGroupState.Succeeded : WorkerGroupState.Healthy, null);
    }

    /// <summary>
    /// Stops every worker: SIGTERM to each worker and its descendants, SIGKILL to whatever is left after
    /// <paramref name="gracePeriod"/>; then waits (bounded) for the log pumps to drain.
    /// </summary>
    public async Task StopAsync(TimeSpan gracePeriod, CancellationToken cancellationToken = default)
    {
        var trees = new List<int>();
        foreach (Worker worker in _workers)
        {
            if (!worker.Process.HasExited)
            {
                trees.AddRange(ProcessTree.WithDescendants(worker.Process.Id));
            }
        }
        foreach (int pid in trees)
        {
            _ = Kill(pid, Sigterm);
        }
        long start = Stopwatch.GetTimestamp();
        while (_workers.Any(w => !w.Process.HasExited) && Stopwatch.GetElapsedTime(start) < gracePeriod)
        {
            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }
        KillAll(trees);
        foreach (Worker worker in _workers)
        {
            await worker.DrainAsync().ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        KillAll();
        foreach (Worker worker in _workers)
        {
            await worker.DrainAsync().ConfigureAwait(false);
            worker.Process.Dispose();
        }
    }

    private void KillAll(IEnumerable<int>? known = null)
    {
        var pids = new HashSet<int>(known ?? []);
        foreach (Worker worker in _workers)
        {
            if (!worker.Process.HasExited)
            {
                pids.UnionWith(ProcessTree.WithDescendants(worker.Process.Id));
            }
        }
        foreach (int pid in pids)
        {
            _ = Kill(pid, Sigkill);
        }
        foreach (Worker worker in _workers)
        {
            try
            {
                worker.Process.WaitForExit(2000);
            }
            catch (InvalidOperationException)
            {
                // Never started.
            }
        }
    }

    /// <summary>
    /// Which rank made mpirun end the job, from its report on stderr ("Process name: [[JOB,1],RANK]" for an exit code,
    /// "process rank RANK with PID …" for a signal); rank −1 when the report names none.
    /// </summary>
    private WorkerFailure DescribeMpirunFailure(Worker worker)
    {
        WorkerFailure mpirun = worker.Describe();
        int rank = ParseMpirunFailedRank(mpirun.StderrTail);
        // MPI rank r is app context r, whose local rank is r.
        int localRank = rank >= 0 && rank < _mpirunRanks!.Count ? rank : -1;
        return localRank < 0
            ? mpirun with { LocalRank = -1, Rank = -1, ErrorFile = "" }
            : mpirun with { LocalRank = localRank, Rank = _mpirunRanks![localRank], ErrorFile = _mpirunErrorFiles![localRank] };
    }

    /// <summary>The MPI rank mpirun's report names as the first to fail, or −1.</summary>
    internal static int ParseMpirunFailedRank(IEnumerable<string> stderrLines)
    {
        foreach (string line in stderrLines)
        {
            Match match = MpirunFailedRank().Match(line);
            if (match.Success)
            {
                return int.Parse(match.Groups["rank"].Value, CultureInfo.InvariantCulture);
            }
        }
        return -1;
    }

    [GeneratedRegex(@"(?:Process name: \[\[\d+,\d+\],(?<rank>\d+)\])|(?:process rank (?<rank>\d+) with PID)", RegexOptions.CultureInvariant)]
    private static partial Regex MpirunFailedRank();

    private static ProcessStartInfo StartInfo(string program, IEnumerable<string> arguments, bool redirectStdout)
    {
        var start = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardError = true,
            RedirectStandardOutput = redirectStdout,
            RedirectStandardInput = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        return start;
    }

    private static string? LogFolder(string? logDirectory, string name)
    {
        if (logDirectory is null)
        {
            return null;
        }
        string folder = Path.Combine(logDirectory, name);
        Directory.CreateDirectory(folder);
        return folder;
    }

    private static void PrepareErrorFile(string errorFile)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(errorFile)!);
        File.Delete(errorFile);
    }

    private static Process StartProcess(ProcessStartInfo start, string program)
    {
        try
        {
            return Process.Start(start) ?? throw new LaunchException($"Could not start {program}.");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new LaunchException($"Could not start the entrypoint {program}: {ex.Message}", ex);
        }
    }

    private static bool IsRoot() => GetEffectiveUserId() == 0;

    /// <summary>The name of signal <paramref name="number"/> (SIGKILL for 9), or null when unknown.</summary>
    public static string? SignalName(int number) => number switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => null,
    };

    private const int Sigterm = 15;
    private const int Sigkill = 9;

    // DllImport rather than LibraryImport: blittable arguments need no marshalling, and Kiln.Launch compiles without /unsafe.
#pragma warning disable SYSLIB1054
    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Kill(int pid, int signal);

    [DllImport("libc", EntryPoint = "geteuid")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern uint GetEffectiveUserId();
#pragma warning restore SYSLIB1054

    private sealed class Worker
    {
        private readonly Queue<string> _stderrTail = new();
        private readonly Lock _gate = new();
        private readonly Task _stderrPump;
        private readonly Task _stdoutPump;

        private readonly int _tailLines;

        public Worker(Process process, int localRank, int rank, string? folder, string errorFile, int tailLines)
        {
            _tailLines = tailLines;
            Process = process;
            LocalRank = localRank;
            Rank = rank;
            ErrorFile = errorFile;
            _stderrPump = PumpStderrAsync(folder is null ? null : Path.Combine(folder, "stderr.log"));
            _stdoutPump = folder is null ? Task.CompletedTask : PumpStdoutAsync(Path.Combine(folder, "stdout.log"));
        }

        public Process Process { get; }

        public int LocalRank { get; }

        public int Rank { get; }

        public string ErrorFile { get; }

        public DateTimeOffset? ExitedAt { get; set; }

        public WorkerFailure Describe()
        {
            int code = Process.ExitCode;
            string? signal = code > 128 ? SignalName(code - 128) : null;
            string[] tail;
            lock (_gate)
            {
                tail = [.. _stderrTail];
            }
            return new WorkerFailure(LocalRank, Rank, code, signal, ExitedAt ?? DateTimeOffset.UtcNow, tail, ErrorFile);
        }

        /// <summary>Waits for the pumps, bounded: an orphaned grandchild may hold a pipe open.</summary>
        public async Task DrainAsync()
        {
            try
            {
                await Task.WhenAll(_stderrPump, _stdoutPump).WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is TimeoutException or IOException or ObjectDisposedException or InvalidOperationException)
            {
                // The tail so far is what the error file gets.
            }
        }

        private async Task PumpStderrAsync(string? file)
        {
            StreamWriter? writer = file is null ? null : new StreamWriter(file, append: true) { AutoFlush = true };
            try
            {
                TextWriter destination = writer ?? Console.Error;
                while (await Process.StandardError.ReadLineAsync().ConfigureAwait(false) is { } line)
                {
                    lock (_gate)
                    {
                        _stderrTail.Enqueue(line);
                        if (_stderrTail.Count > _tailLines)
                        {
                            _stderrTail.Dequeue();
                        }
                    }
                    await destination.WriteLineAsync(line).ConfigureAwait(false);
                }
            }
            finally
            {
                if (writer is not null)
                {
                    await writer.DisposeAsync().ConfigureAwait(false);
                }
            }
        }

        private async Task PumpStdoutAsync(string file)
        {
            var output = new FileStream(file, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            await using (output.ConfigureAwait(false))
            {
                byte[] buffer = new byte[8192];
                int read;
                while ((read = await Process.StandardOutput.BaseStream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
                {
                    await output.WriteAsync(buffer.AsMemory(0, read)).ConfigureAwait(false);
                    await output.FlushAsync().ConfigureAwait(false);
                }
            }
        }
    }
}

/// <summary>Process trees from /proc (children of a pid, recursively).</summary>
internal static class ProcessTree
{
    /// <summary><paramref name="pid"/> and its descendants, children after parents.</summary>
    public static IReadOnlyList<int> WithDescendants(int pid)
    {
        var parents = new Dictionary<int, List<int>>();
        try
        {
            foreach (string directory in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(directory), NumberStyles.None, CultureInfo.InvariantCulture, out int child))
                {
                    continue;
                }
                int parent = ReadParent(directory);
                if (parent > 0)
                {
                    if (!parents.TryGetValue(parent, out List<int>? children))
                    {
                        parents[parent] = children = [];
                    }
                    children.Add(child);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Best effort: the worker itself is still signalled.
        }
        var result = new List<int> { pid };
        for (int i = 0; i < result.Count; i++)
        {
            if (parents.TryGetValue(result[i], out List<int>? children))
            {
                result.AddRange(children.Where(c => !result.Contains(c)));
            }
        }
        return result;
    }

    private static int ReadParent(string directory)
    {
        try
        {
            string stat = File.ReadAllText(Path.Combine(directory, "stat"));
            // pid (comm) state ppid …; comm may hold spaces and parentheses, so parse after the last ')'.
            int close = stat.LastIndexOf(')');
            string[] fields = stat[(close + 2)..].Split(' ', 3);
            return int.Parse(fields[1], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or ArgumentOutOfRangeException or IndexOutOfRangeException)
        {
            return 0;
        }
    }
}
