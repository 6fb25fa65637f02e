using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Threading.Channels;
using Kiln.Launch.Specs;
using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>
/// Runs one local app: starts a process per replica (each in a session and process group of its own), records their
/// output, waits for them, applies the retry policy, and writes every change to <c>state.json</c>. It is the parent of the
/// replicas, so it sees their exit codes; <c>kiln local-supervise APP_DIR</c> runs it detached from the submitter.
/// </summary>
/// <remarks>A cancel is asked for by creating the app's <c>cancel</c> file (checked every 100 ms) or by cancelling the
/// token passed to <see cref="RunAsync"/> (SIGTERM of the <c>local-supervise</c> process).</remarks>
internal sealed class LocalSupervisor
{
    private static readonly TimeSpan s_pollInterval = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan s_drainTimeout = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan s_killTimeout = TimeSpan.FromSeconds(10);

    private readonly LocalAppFiles _files;
    private readonly LocalAppSpec _spec;
    private readonly LocalAppState _state;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly TimeSpan _grace;
    private readonly ReplicaRun[][] _runs;
    private readonly Channel<ReplicaExit> _exits = Channel.CreateUnbounded<ReplicaExit>(new UnboundedChannelOptions { SingleReader = true });

    private LocalSupervisor(LocalAppFiles files, LocalAppSpec spec, LocalAppState state, TimeProvider time, ILogger logger)
    {
        _files = files;
        _spec = spec;
        _state = state;
        _time = time;
        _logger = logger;
        _grace = TimeSpan.FromSeconds(Math.Max(0, spec.CancelGraceSeconds));
        _runs = [.. spec.Roles.Select(r => r.Replicas.Select(_ => new ReplicaRun()).ToArray())];
    }

    /// <summary>Runs the app in <paramref name="appDirectory"/> to its end; returns the final state.</summary>
    /// <param name="appDirectory">The app's state folder (holding <c>spec.json</c>).</param>
    /// <param name="time">The clock for timestamps.</param>
    /// <param name="logger">Where the supervisor logs.</param>
    /// <param name="cancellationToken">Cancelling it cancels the app (replicas stopped, state CANCELLED).</param>
    public static async Task<AppState> RunAsync(string appDirectory, TimeProvider time, ILogger logger, CancellationToken cancellationToken)
    {
        var files = new LocalAppFiles(appDirectory);
        LocalAppSpec spec = files.ReadSpec() ?? throw new LaunchException($"{appDirectory} holds no local app (spec.json is missing).");
        LocalAppState state = files.ReadState() ?? LocalAppState.Initial(spec);
        if (state.State.IsTerminal() || state.State == AppState.Running)
        {
            // Ended (cancelled before it ran) or already supervised.
            return state.State;
        }
        var supervisor = new LocalSupervisor(files, spec, state, time, logger);
        try
        {
            return await supervisor.RunCoreAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            LocalLog.SupervisorFailed(logger, ex, spec.AppId);
            await supervisor.StopAsync(supervisor.AllReplicas(), AppState.Failed).ConfigureAwait(false);
            supervisor.End(AppState.Failed, $"the supervisor failed: {ex.Message}");
            return AppState.Failed;
        }
    }

    private async Task<AppState> RunCoreAsync(CancellationToken cancellationToken)
    {
        _state.Supervisor = PosixProcesses.Identify(Environment.ProcessId);
        LocalLog.SupervisorStarted(_logger, _spec.AppId, Environment.ProcessId);
        if (CancelRequested(cancellationToken))
        {
            return End(AppState.Cancelled, "cancelled before it started");
        }
        _state.State = AppState.Running;
        _state.Started = _time.GetUtcNow();
        foreach ((int role, int replica) in AllReplicas())
        {
            Start(role, replica);
        }
        Save();
        while (true)
        {
            if (CancelRequested(cancellationToken))
            {
                LocalLog.CancelRequested(_logger, _spec.AppId, _grace.TotalSeconds);
                await StopAsync(AllReplicas(), AppState.Cancelled).ConfigureAwait(false);
                return End(AppState.Cancelled, "cancelled");
            }
            while (_exits.Reader.TryRead(out ReplicaExit exit))
            {
                if (await HandleExitAsync(exit).ConfigureAwait(false) is { } final)
                {
                    return final;
                }
            }
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            wait.CancelAfter(s_pollInterval);
            try
            {
                await _exits.Reader.WaitToReadAsync(wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // The poll interval passed, or the app is being cancelled: checked at the top.
            }
        }
    }

    private bool CancelRequested(CancellationToken cancellationToken) => cancellationToken.IsCancellationRequested || File.Exists(_files.CancelPath);

    /// <summary>Applies a replica's exit; returns the app's final state when the app ended.</summary>
    private async Task<AppState?> HandleExitAsync(ReplicaExit exit)
    {
        ReplicaRun run = _runs[exit.Role][exit.Replica];
        if (run.Generation != exit.Generation || !run.Running)
        {
            // A replica the supervisor stopped itself (restart, failure, cancel): already recorded.
            return null;
        }
        run.Running = false;
        LocalRoleSpec role = _spec.Roles[exit.Role];
        LocalReplicaState replica = _state.Roles[exit.Role].Replicas[exit.Replica];
        replica.ExitCode = exit.ExitCode;
        replica.Ended = _time.GetUtcNow();
        replica.State = exit.ExitCode == 0 ? AppState.Succeeded : AppState.Failed;
        LocalLog.ReplicaExited(_logger, _spec.AppId, role.Name, exit.Replica, exit.ExitCode);
        if (exit.ExitCode != 0)
        {
            LocalRoleState roleState = _state.Roles[exit.Role];
            string what = $"{role.Name}[{exit.Replica.ToString(CultureInfo.InvariantCulture)}] exited with code {exit.ExitCode.ToString(CultureInfo.InvariantCulture)}";
            if (roleState.RetriesUsed < role.MaxRetries)
            {
                roleState.RetriesUsed++;
                _state.NumRestarts++;
                LocalLog.AppRestarting(_logger, _spec.AppId, _state.NumRestarts, role.RetryPolicy.ToString(), role.Name, exit.Replica);
                List<(int Role, int Replica)> targets = role.RetryPolicy switch
                {
                    RetryPolicy.Replica => [(exit.Role, exit.Replica)],
                    RetryPolicy.Role => [.. Enumerable.Range(0, role.Replicas.Count).Select(i => (exit.Role, i))],
                    _ => AllReplicas(),
                };
                await StopAsync(targets, AppState.Cancelled).ConfigureAwait(false);
                foreach ((int r, int i) in targets)
                {
                    _state.Roles[r].Replicas[i].Restarts++;
                    Start(r, i);
                }
                _state.Message = $"restart {_state.NumRestarts.ToString(CultureInfo.InvariantCulture)} ({role.RetryPolicy.ToString().ToLowerInvariant()} policy) after {what}";
                Save();
                return null;
            }
            _state.StructuredError = FailureReport(role, exit.Replica, exit.ExitCode);
            await StopAsync(AllReplicas(), AppState.Cancelled).ConfigureAwait(false);
            string retries = role.MaxRetries > 0 ? $" after {role.MaxRetries.ToString(CultureInfo.InvariantCulture)} retries" : "";
            return End(AppState.Failed, what + retries);
        }
        if (_state.Roles.All(r => r.Replicas.All(p => p.State == AppState.Succeeded)))
        {
            return End(AppState.Succeeded, "every replica exited with code 0");
        }
        Save();
        return null;
    }

    /// <summary>The first failure as <c>kiln status</c> shows it: the exit code (or signal) and the last lines of stderr.</summary>
    private static string FailureReport(LocalRoleSpec role, int replica, int exitCode)
    {
        var report = new StringBuilder();
        report.Append(CultureInfo.InvariantCulture, $"{role.Name}[{replica}] exited with code {exitCode}");
        if (exitCode > 128 && exitCode < 128 + 65)
        {
            report.Append(CultureInfo.InvariantCulture, $" (signal {exitCode - 128})");
        }
        string logDirectory = role.Replicas[replica].LogDirectory;
        string errorFile = Path.Combine(logDirectory, "error.json");
        if (File.Exists(errorFile))
        {
            report.Append("; error file: ").Append(ReadTail(errorFile, 2048).Trim());
        }
        string tail = ReadTail(LocalAppFiles.StderrPath(logDirectory), 2048);
        string[] lines = tail.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length > 0)
        {
            report.Append("; last stderr lines:");
            foreach (string line in lines.TakeLast(5))
            {
                report.Append("\n  ").Append(line.TrimEnd('\r'));
            }
        }
        return report.ToString();
    }

    private static string ReadTail(string path, int bytes)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            long start = Math.Max(0, stream.Length - bytes);
            stream.Position = start;
            var buffer = new byte[stream.Length - start];
            stream.ReadExactly(buffer);
            string text = Encoding.UTF8.GetString(buffer);
            return start > 0 && text.IndexOf('\n', StringComparison.Ordinal) is var first and >= 0 ? text[(first + 1)..] : text;
        }
        catch (IOException)
        {
            return "";
        }
    }

    private List<(int Role, int Replica)> AllReplicas() =>
        [.. _spec.Roles.SelectMany((r, ri) => r.Replicas.Select((_, i) => (ri, i)))];

    private void Start(int role, int replica)
    {
        LocalReplicaSpec spec = _spec.Roles[role].Replicas[replica];
        LocalReplicaState state = _state.Roles[role].Replicas[replica];
        ReplicaRun run = _runs[role][replica];
        int generation = ++run.Generation;
        var log = new ReplicaLogWriter(spec.LogDirectory, _time);
        string? setsid = PosixProcesses.Setsid;
        var start = new ProcessStartInfo(setsid ?? spec.Entrypoint)
        {
            WorkingDirectory = spec.WorkingDirectory,
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (setsid is not null)
        {
            start.ArgumentList.Add(spec.Entrypoint);
        }
        foreach (string arg in spec.Args)
        {
            start.ArgumentList.Add(arg);
        }
        foreach ((string key, string value) in spec.Env)
        {
            start.Environment[key] = value;
        }
        state.ExitCode = null;
        state.Ended = null;
        state.Started = _time.GetUtcNow();
        state.State = AppState.Running;
        run.Running = true;
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException("no process was started");
        }
        catch (Exception ex) when (ex is Win32Exception or InvalidOperationException or IOException)
        {
            LocalLog.ReplicaStartFailed(_logger, _spec.AppId, _spec.Roles[role].Name, replica, ex.Message);
            log.WriteLine(isStderr: true, $"kiln: cannot start {spec.Entrypoint}: {ex.Message}");
            log.Dispose();
            state.Process = null;
            run.Pid = 0;
            run.Exited = Task.FromResult(127);
            _exits.Writer.TryWrite(new ReplicaExit(role, replica, generation, 127));
            return;
        }
        process.StandardInput.Close();
        state.Process = PosixProcesses.Identify(process.Id) ?? new ProcessIdentity(process.Id, 0);
        run.Pid = process.Id;
        run.InGroup = setsid is not null;
        LocalLog.ReplicaStarted(_logger, _spec.AppId, _spec.Roles[role].Name, replica, process.Id);
        run.Exited = WatchAsync(process, run.InGroup, log, role, replica, generation);
    }

    /// <summary>Pumps a replica's output into its log files, waits for it, and reports its exit code.</summary>
    private async Task<int> WatchAsync(Process process, bool inGroup, ReplicaLogWriter log, int role, int replica, int generation)
    {
        int exitCode = -1;
        try
        {
            Task stdout = PumpAsync(process.StandardOutput.BaseStream, log, isStderr: false, role, replica);
            Task stderr = PumpAsync(process.StandardError.BaseStream, log, isStderr: true, role, replica);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            exitCode = process.ExitCode;
            if (inGroup)
            {
                // What the replica left behind in its process group ends with it (and lets its pipes reach EOF).
                PosixProcesses.SignalGroup(process.Id, PosixProcesses.SigKill);
            }
            await Task.WhenAny(Task.WhenAll(stdout, stderr), Task.Delay(s_drainTimeout, _time)).ConfigureAwait(false);
        }
        finally
        {
            log.Dispose();
            process.Dispose();
            _exits.Writer.TryWrite(new ReplicaExit(role, replica, generation, exitCode));
        }
        return exitCode;
    }

    private async Task PumpAsync(Stream stream, ReplicaLogWriter log, bool isStderr, int role, int replica)
    {
        byte[] buffer = new byte[16 * 1024];
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                log.Write(isStderr, buffer.AsSpan(0, read));
            }
            log.Complete(isStderr);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            LocalLog.LogPumpFailed(_logger, _spec.AppId, _spec.Roles[role].Name, replica, ex.Message);
        }
    }

    /// <summary>Stops the running ones among <paramref name="replicas"/>: SIGTERM to their process groups, SIGKILL after the grace period.</summary>
    private async Task StopAsync(IReadOnlyList<(int Role, int Replica)> replicas, AppState stoppedState)
    {
        List<(int Role, int Replica, ReplicaRun Run)> stopping = [];
        foreach ((int role, int replica) in replicas)
        {
            ReplicaRun run = _runs[role][replica];
            LocalReplicaState state = _state.Roles[role].Replicas[replica];
            if (run.Running && run.Pid > 0)
            {
                run.Running = false;
                Signal(run, PosixProcesses.SigTerm);
                stopping.Add((role, replica, run));
            }
            else if (run.Running || state.State == AppState.Pending)
            {
                // Never started (or could not start): nothing to signal.
                run.Running = false;
                state.State = stoppedState;
                state.Ended = _time.GetUtcNow();
            }
        }
        if (stopping.Count == 0)
        {
            return;
        }
        Task all = Task.WhenAll(stopping.Select(s => s.Run.Exited!));
        await Task.WhenAny(all, Task.Delay(_grace, _time)).ConfigureAwait(false);
        foreach ((int role, int replica, ReplicaRun run) in stopping)
        {
            if (!run.Exited!.IsCompleted)
            {
                LocalLog.ReplicaKilled(_logger, _spec.AppId, _spec.Roles[role].Name, replica, run.Pid);
                Signal(run, PosixProcesses.SigKill);
            }
        }
        await Task.WhenAny(all, Task.Delay(s_killTimeout, _time)).ConfigureAwait(false);
        DateTimeOffset now = _time.GetUtcNow();
        foreach ((int role, int replica, ReplicaRun run) in stopping)
        {
            LocalReplicaState state = _state.Roles[role].Replicas[replica];
            state.ExitCode = run.Exited!.IsCompletedSuccessfully ? run.Exited.Result : null;
            state.State = stoppedState;
            state.Ended = now;
        }
    }

    private static void Signal(ReplicaRun run, int signal)
    {
        if (!(run.InGroup && PosixProcesses.SignalGroup(run.Pid, signal)))
        {
            PosixProcesses.Signal(run.Pid, signal);
        }
    }

    private AppState End(AppState state, string message)
    {
        foreach (LocalReplicaState replica in _state.Roles.SelectMany(r => r.Replicas).Where(r => r.State == AppState.Pending))
        {
            replica.State = AppState.Cancelled;
        }
        _state.State = state;
        _state.Message = message;
        _state.Ended = _time.GetUtcNow();
        Save();
        string display = state.ToDisplay();
        LocalLog.AppEnded(_logger, _spec.AppId, display, message);
        return state;
    }

    private void Save() => _files.WriteState(_state);

    private readonly record struct ReplicaExit(int Role, int Replica, int Generation, int ExitCode);

    /// <summary>The supervisor's handle on one replica slot; only the supervisor's loop touches it.</summary>
    private sealed class ReplicaRun
    {
        /// <summary>Bumped at every start, so exits of replicas the supervisor stopped itself are told apart.</summary>
        public int Generation { get; set; }

        public bool Running { get; set; }

        public bool InGroup { get; set; }

        /// <summary>The running (or last) process id; 0 when it never started.</summary>
        public int Pid { get; set; }

        /// <summary>Completes with the exit code once the process ended and its output was recorded.</summary>
        public Task<int>? Exited { get; set; }
    }
}
