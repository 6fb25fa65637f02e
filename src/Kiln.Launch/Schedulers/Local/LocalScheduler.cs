using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Runtime.InteropServices;
using Kiln.Launch.Specs;
using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>
/// The embedded default scheduler, <c>local</c>: a process per replica on this machine, watched by a supervisor process
/// that outlives the submitter, with state and logs on disk (<see cref="LocalAppFiles"/>), so <c>kiln status</c>, <c>log</c>
/// and <c>cancel</c> work from any shell.
/// </summary>
internal sealed class LocalScheduler : IScheduler, IAsyncDisposable
{
    /// <summary>The scheduler's name.</summary>
    public const string SchedulerName = "local";

    /// <summary>The environment variable that holds the rank-0 host (<c>${rank0_env}</c>); always 127.0.0.1 here.</summary>
    public const string Rank0HostVariable = "KILN_RANK0_HOST";

    private const string LogDirOption = "log_dir";
    private const string CancelGraceOption = "cancel_grace";
    private const string SuperviseOption = "supervise";
    private const string Detached = "detached";
    private const string Inline = "inline";
    private const double DefaultCancelGraceSeconds = 10;

    private static readonly TimeSpan s_statePoll = TimeSpan.FromMilliseconds(50);

    /// <summary>An app with no supervisor recorded yet is PENDING for this long, then UNKNOWN.</summary>
    private static readonly TimeSpan s_supervisorStartTimeout = TimeSpan.FromSeconds(30);

    private readonly LocalSchedulerOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopInProcess = new();
    private readonly List<Task> _inProcess = [];

    public LocalScheduler(LocalSchedulerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _logger = options.LoggerFactory.CreateLogger("Kiln.Launch.Local");
    }

    /// <inheritdoc />
    public string Name => SchedulerName;

    /// <inheritdoc />
    public IReadOnlyList<RunOption> RunOptions { get; } =
    [
        new(LogDirOption, "Folder for replica logs (LOG_DIR/APP_ID/ROLE/REPLICA/{stdout.log,stderr.log,combined.jsonl}); default: the state folder ($KILN_STATE_DIR/local or ~/.kiln/local)."),
        new(CancelGraceOption, "Seconds between SIGTERM and SIGKILL when replicas are stopped (cancel, restarts, failures).", DefaultCancelGraceSeconds.ToString(CultureInfo.InvariantCulture)),
        new(SuperviseOption, "detached: a supervisor process of its own watches the replicas and outlives the submitter; inline: the submitting process watches them (one process start less; the app is cancelled when it ends early; kiln run --wait only).", Detached),
    ];

    /// <summary>True when the request asks the submitting process to supervise the app itself (run option <c>supervise=inline</c>).</summary>
    public static bool IsInline(DryRunInfo request) => request?.Options.TryGetValue(SuperviseOption, out string? mode) == true && mode == Inline;

    /// <summary>The folder of this app's state files.</summary>
    public string AppDirectory(string appId) => Path.Combine(_options.StateDirectory, appId);

    /// <inheritdoc />
    public DryRunInfo SubmitDryRun(AppDef app, IReadOnlyDictionary<string, string> options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        Dictionary<string, string> resolved = ResolveOptions(options);
        if (app.Roles.Count == 0)
        {
            throw new LaunchException($"local: app \"{app.Name}\" has no roles.");
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Role role in app.Roles)
        {
            if (string.IsNullOrWhiteSpace(role.Name) || role.Name is "." or ".." || role.Name.Contains('/', StringComparison.Ordinal) || !names.Add(role.Name))
            {
                throw new LaunchException($"local: role name \"{role.Name}\" is empty, repeated or not usable as a folder name.");
            }
            if (role.NumReplicas < 1)
            {
                throw new LaunchException($"local: role {role.Name} asks for {role.NumReplicas} replicas; at least 1 is needed.");
            }
            if (role.MaxRetries < 0)
            {
                throw new LaunchException($"local: role {role.Name} has max retries {role.MaxRetries}; it must be 0 or more.");
            }
        }

        string appId = NewAppId(app.Name);
        string logRoot = resolved.TryGetValue(LogDirOption, out string? logDir) ? Path.GetFullPath(ExpandHome(logDir), _options.WorkingDirectory) : _options.StateDirectory;
        string appLogs = Path.Combine(logRoot, appId);
        var spec = new LocalAppSpec
        {
            AppId = appId,
            Session = _options.Session,
            CancelGraceSeconds = double.Parse(resolved[CancelGraceOption], CultureInfo.InvariantCulture),
            App = app,
        };
        foreach (Role role in app.Roles)
        {
            string workingDirectory = string.IsNullOrEmpty(role.Image) ? _options.WorkingDirectory : Path.GetFullPath(ExpandHome(role.Image), _options.WorkingDirectory);
            if (!Directory.Exists(workingDirectory))
            {
                throw new LaunchException($"local: role {role.Name}: the working folder (image) {workingDirectory} does not exist.");
            }
            var macros = new Macros(appId, workingDirectory, Rank0HostVariable);
            var roleSpec = new LocalRoleSpec { Name = role.Name, MaxRetries = role.MaxRetries, RetryPolicy = role.RetryPolicy };
            for (int i = 0; i < role.NumReplicas; i++)
            {
                Role applied = macros.ApplyTo(role, i);
                string replicaLogs = Path.Combine(appLogs, role.Name, i.ToString(CultureInfo.InvariantCulture));
                var env = new Dictionary<string, string>(StringComparer.Ordinal)
                {
                    ["KILN_APP_ID"] = appId,
                    ["KILN_ROLE_NAME"] = role.Name,
                    ["KILN_REPLICA_ID"] = i.ToString(CultureInfo.InvariantCulture),
                    ["KILN_NUM_REPLICAS"] = role.NumReplicas.ToString(CultureInfo.InvariantCulture),
                    [Rank0HostVariable] = "127.0.0.1",
                    ["KILN_ERROR_FILE"] = Path.Combine(replicaLogs, "error.json"),
                };
                foreach ((string key, string value) in applied.Env)
                {
                    env[key] = value;
                }
                roleSpec.Replicas.Add(new LocalReplicaSpec
                {
                    Id = i,
                    Entrypoint = ResolveEntrypoint(role.Name, applied.Entrypoint, workingDirectory, env.GetValueOrDefault("PATH") ?? _options.GetEnvironmentVariable("PATH")),
                    Args = [.. applied.Args],
                    Env = env,
                    WorkingDirectory = workingDirectory,
                    LogDirectory = replicaLogs,
                });
            }
            spec.Roles.Add(roleSpec);
        }
        return new DryRunInfo(appId, app, Describe(spec))
        {
            Artifacts = new Dictionary<string, string> { ["spec.json"] = Encoding.UTF8.GetString(LocalJson.Write(spec)) },
            Options = resolved,
        };
    }

    /// <inheritdoc />
    public Task<AppHandle> SubmitAsync(DryRunInfo request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        cancellationToken.ThrowIfCancellationRequested();
        if (!request.Artifacts.TryGetValue("spec.json", out string? json))
        {
            throw new LaunchException("local: the request was not made by the local scheduler's dry run.");
        }
        LocalAppSpec spec = LocalJson.ReadSpec(Encoding.UTF8.GetBytes(json));
        spec.Submitted = _options.TimeProvider.GetUtcNow();
        var files = new LocalAppFiles(AppDirectory(spec.AppId));
        try
        {
            Directory.CreateDirectory(_options.StateDirectory);
            if (Directory.Exists(files.Directory))
            {
                throw new LaunchException($"local: {files.Directory} exists already; submit again for a new app id.");
            }
            Directory.CreateDirectory(files.Directory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new LaunchException($"local: cannot create the state folder {files.Directory}: {ex.Message}", ex);
        }
        try
        {
            files.WriteSpec(spec);
            files.WriteState(LocalAppState.Initial(spec));
            StartSupervisor(files, spec.AppId, IsInline(request));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or LaunchException)
        {
            // Nothing half-submitted: the supervisor did not start, so no replica did.
            TryDelete(files.Directory);
            throw ex as LaunchException ?? new LaunchException($"local: cannot start the supervisor of {spec.AppId}: {ex.Message}", ex);
        }
        int replicas = spec.Roles.Sum(r => r.Replicas.Count);
        LocalLog.AppSubmitted(_logger, spec.AppId, replicas, files.Directory);
        return Task.FromResult(new AppHandle(SchedulerName, _options.Session, spec.AppId));
    }

    /// <inheritdoc />
    public Task<AppStatus?> DescribeAsync(string appId, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (Load(appId) is not { } app)
        {
            return Task.FromResult<AppStatus?>(null);
        }
        LocalAppState state = app.State;
        return Task.FromResult<AppStatus?>(new AppStatus(state.State)
        {
            NumRestarts = state.NumRestarts + AgentRestarts(app.Spec),
            Message = state.Message,
            StructuredError = state.StructuredError,
            Roles = [.. state.Roles.Select(r => new RoleStatus(r.Name, [.. r.Replicas.Select(p => new ReplicaStatus(p.Id, p.State, r.Name, "localhost") { ExitCode = p.ExitCode })]))],
        });
    }

    /// <summary>
    /// Whole-group restarts done by <c>kiln agent</c> replicas (dist.ddp): each agent writes agent-state.json beside its
    /// KILN_ERROR_FILE, in the replica's log folder, with the job's restart count (shared by every node, so the largest).
    /// </summary>
    private static int AgentRestarts(LocalAppSpec spec)
    {
        int restarts = 0;
        foreach (LocalReplicaSpec replica in spec.Roles.SelectMany(r => r.Replicas))
        {
            string path = Path.Combine(replica.LogDirectory, "agent-state.json");
            try
            {
                using System.Text.Json.JsonDocument json = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
                if (json.RootElement.TryGetProperty("restarts", out System.Text.Json.JsonElement count) && count.TryGetInt32(out int value))
                {
                    restarts = Math.Max(restarts, value);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
            {
                // No agent in this replica, or its file is being replaced right now.
            }
        }
        return restarts;
    }

    /// <summary>The app as submitted (its roles, before macros), or null for an unknown app.</summary>
    public AppDef? DescribeApp(string appId) => Load(appId)?.Spec.App;

    /// <summary>The spec and effective state of an app, or null when there is no such app.</summary>
    internal (LocalAppSpec Spec, LocalAppState State, LocalAppFiles Files)? Load(string appId)
    {
        if (!IsAppId(appId))
        {
            return null;
        }
        var files = new LocalAppFiles(AppDirectory(appId));
        if (files.ReadSpec() is not { } spec)
        {
            return null;
        }
        LocalAppState state = files.ReadState() ?? LocalAppState.Initial(spec);
        if (state.State.IsTerminal())
        {
            return (spec, state, files);
        }
        ProcessIdentity? supervisor = state.Supervisor ?? files.ReadSupervisor();
        if (PosixProcesses.IsAlive(supervisor))
        {
            return (spec, state, files);
        }
        // The supervisor may have written its end and exited between the two reads.
        state = files.ReadState() ?? state;
        if (state.State.IsTerminal())
        {
            return (spec, state, files);
        }
        if (supervisor is null && _options.TimeProvider.GetUtcNow() - spec.Submitted < s_supervisorStartTimeout)
        {
            return (spec, state, files);
        }
        state.Message = supervisor is null
            ? "no supervisor was recorded for this app"
            : $"the supervisor (pid {supervisor.Pid}) ended without recording an end; replicas may still run (kiln cancel stops them); see {files.SupervisorLogPath}";
        state.State = AppState.Unknown;
        return (spec, state, files);
    }

    /// <inheritdoc />
    public IAsyncEnumerable<string> LogAsync(string appId, string role, int? replica, LogQuery query, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(role);
        ArgumentNullException.ThrowIfNull(query);
        if (Load(appId) is not { } app)
        {
            throw new LaunchException($"local: no app {appId} in {_options.StateDirectory}.");
        }
        LocalRoleSpec roleSpec = app.Spec.Roles.FirstOrDefault(r => r.Name == role)
            ?? throw new LaunchException($"local: app {appId} has no role {role}; its roles are {string.Join(", ", app.Spec.Roles.Select(r => r.Name))}.");
        if (replica is { } id && (id < 0 || id >= roleSpec.Replicas.Count))
        {
            throw new LaunchException($"local: role {role} of {appId} has replicas 0 to {roleSpec.Replicas.Count - 1}, not {id}.");
        }
        System.Text.RegularExpressions.Regex? regex;
        try
        {
            regex = query.Regex is null ? null : new System.Text.RegularExpressions.Regex(query.Regex, System.Text.RegularExpressions.RegexOptions.None, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException ex)
        {
            throw new LaunchException($"local: --regex {query.Regex} is not a regular expression: {ex.Message}", ex);
        }
        if (query.Stream is not (null or "stdout" or "stderr" or "combined"))
        {
            throw new LaunchException($"local: stream {query.Stream} is not stdout, stderr or combined.");
        }
        IEnumerable<LocalReplicaSpec> replicas = replica is { } only ? [roleSpec.Replicas[only]] : roleSpec.Replicas;
        return ReadLogsAsync(appId, role, [.. replicas], query, regex, cancellationToken);
    }

    private async IAsyncEnumerable<string> ReadLogsAsync(string appId, string role, List<LocalReplicaSpec> replicas, LogQuery query, System.Text.RegularExpressions.Regex? regex, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        string? stream = query.Stream is "combined" ? null : query.Stream;
        foreach (LocalReplicaSpec replica in replicas)
        {
            string path = LocalAppFiles.CombinedPath(replica.LogDirectory);
            long position = 0;
            var pending = new List<byte>();
            while (true)
            {
                // Read whether the replica is done before the file, so nothing written in between is missed.
                bool done = !query.Tail || ReplicaDone(appId, role, replica.Id);
                foreach (LocalLogLine line in ReadNewLines(path, ref position, pending))
                {
                    if ((stream is null || line.S == stream)
                        && (query.Since is not { } since || line.T >= since)
                        && (query.Until is not { } until || line.T < until)
                        && (regex is null || regex.IsMatch(line.L)))
                    {
                        yield return line.L;
                    }
                }
                if (done)
                {
                    break;
                }
                await Task.Delay(s_statePoll * 2, _options.TimeProvider, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private bool ReplicaDone(string appId, string role, int replica)
    {
        if (Load(appId) is not { } app || app.State.State.IsTerminal() || app.State.State == AppState.Unknown)
        {
            return true;
        }
        LocalReplicaState? state = app.State.Roles.FirstOrDefault(r => r.Name == role)?.Replicas.FirstOrDefault(r => r.Id == replica);
        return state is null || state.State.IsTerminal();
    }

    private static List<LocalLogLine> ReadNewLines(string path, ref long position, List<byte> pending)
    {
        List<LocalLogLine> lines = [];
        FileStream file;
        try
        {
            file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            return lines;
        }
        using (file)
        {
            file.Position = position;
            byte[] buffer = new byte[64 * 1024];
            int read;
            while ((read = file.Read(buffer)) > 0)
            {
                position += read;
                int start = 0;
                for (int i = 0; i < read; i++)
                {
                    if (buffer[i] != (byte)'\n')
                    {
                        continue;
                    }
                    pending.AddRange(buffer.AsSpan(start, i - start));
                    start = i + 1;
                    if (pending.Count > 0)
                    {
                        LocalLogLine? line = LocalJson.ReadLogLine(CollectionsMarshal.AsSpan(pending));
                        if (line is not null)
                        {
                            lines.Add(line);
                        }
                    }
                    pending.Clear();
                }
                pending.AddRange(buffer.AsSpan(start, read - start));
            }
        }
        return lines;
    }

    /// <inheritdoc />
    public async Task CancelAsync(string appId, CancellationToken cancellationToken)
    {
        if (Load(appId) is not { } app)
        {
            throw new LaunchException($"local: no app {appId} in {_options.StateDirectory}.");
        }
        if (app.State.State.IsTerminal())
        {
            return;
        }
        LocalAppFiles files = app.Files;
        await File.WriteAllTextAsync(files.CancelPath, _options.TimeProvider.GetUtcNow().ToString("O", CultureInfo.InvariantCulture), cancellationToken).ConfigureAwait(false);
        TimeSpan grace = TimeSpan.FromSeconds(Math.Max(0, app.Spec.CancelGraceSeconds));
        long deadline = _options.TimeProvider.GetTimestamp();
        while (app.State.State is not AppState.Unknown && _options.TimeProvider.GetElapsedTime(deadline) < grace + TimeSpan.FromSeconds(15))
        {
            await Task.Delay(s_statePoll, _options.TimeProvider, cancellationToken).ConfigureAwait(false);
            app = Load(appId) ?? app;
            if (app.State.State.IsTerminal())
            {
                return;
            }
        }
        // No supervisor to do it (or it does not answer): stop the recorded replicas here and record the end.
        LocalLog.SupervisorGone(_logger, appId);
        LocalAppState state = files.ReadState() ?? LocalAppState.Initial(app.Spec);
        List<ProcessIdentity> alive = [.. state.Roles.SelectMany(r => r.Replicas).Select(r => r.Process).Where(PosixProcesses.IsAlive).Select(p => p!)];
        foreach (ProcessIdentity process in alive)
        {
            SignalReplica(process.Pid, PosixProcesses.SigTerm);
        }
        long stopStart = _options.TimeProvider.GetTimestamp();
        while (alive.Any(PosixProcesses.IsAlive) && _options.TimeProvider.GetElapsedTime(stopStart) < grace)
        {
            await Task.Delay(s_statePoll, _options.TimeProvider, cancellationToken).ConfigureAwait(false);
        }
        foreach (ProcessIdentity process in alive.Where(PosixProcesses.IsAlive))
        {
            SignalReplica(process.Pid, PosixProcesses.SigKill);
        }
        DateTimeOffset now = _options.TimeProvider.GetUtcNow();
        foreach (LocalReplicaState replica in state.Roles.SelectMany(r => r.Replicas).Where(r => !r.State.IsTerminal()))
        {
            replica.State = AppState.Cancelled;
            replica.Ended = now;
        }
        state.State = AppState.Cancelled;
        state.Message = "cancelled (the supervisor was gone; kiln cancel stopped the replicas itself)";
        state.Ended = now;
        files.WriteState(state);
    }

    private static void SignalReplica(int pid, int signal)
    {
        if (!PosixProcesses.SignalGroup(pid, signal))
        {
            PosixProcesses.Signal(pid, signal);
        }
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<ListedApp>> ListAsync(CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        List<(DateTimeOffset Submitted, ListedApp App)> apps = [];
        if (Directory.Exists(_options.StateDirectory))
        {
            foreach (string folder in Directory.EnumerateDirectories(_options.StateDirectory))
            {
                string appId = Path.GetFileName(folder);
                try
                {
                    if (Load(appId) is { } app)
                    {
                        apps.Add((app.Spec.Submitted, new ListedApp(new AppHandle(SchedulerName, app.Spec.Session, appId), app.State.State, app.Spec.App?.Name ?? appId)));
                    }
                }
                catch (LaunchException)
                {
                    // Not a local app folder Kiln can read: not listed.
                }
            }
        }
        return Task.FromResult<IReadOnlyList<ListedApp>>([.. apps.OrderBy(a => a.Submitted).Select(a => a.App)]);
    }

    /// <summary>Stops in-process supervisors (their apps end CANCELLED); detached ones are left running.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopInProcess.CancelAsync().ConfigureAwait(false);
        Task[] running;
        lock (_inProcess)
        {
            running = [.. _inProcess];
        }
        await Task.WhenAll(running).ConfigureAwait(false);
        _stopInProcess.Dispose();
    }

    private void StartSupervisor(LocalAppFiles files, string appId, bool inline)
    {
        if (inline || _options.SupervisorCommand is not { Count: > 0 } command)
        {
            files.WriteSupervisor(PosixProcesses.Identify(Environment.ProcessId) ?? new ProcessIdentity(Environment.ProcessId, 0));
            ILogger logger = _logger;
            CancellationToken stop = _stopInProcess.Token;
            Task task = Task.Run(async () =>
            {
                try
                {
                    await LocalSupervisor.RunAsync(files.Directory, _options.TimeProvider, logger, stop).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is LaunchException or IOException or OperationCanceledException)
                {
                    LocalLog.SupervisorFailed(logger, ex, appId);
                }
            }, CancellationToken.None);
            lock (_inProcess)
            {
                _inProcess.Add(task);
            }
            return;
        }
        // sh puts the supervisor's stdio on its log file (so it holds no pipe of the submitter) and setsid gives it a
        // session of its own (no terminal signals); neither forks, so the pid is the supervisor's.
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("log=\"$1\"; shift; exec \"$@\" </dev/null >>\"$log\" 2>&1");
        start.ArgumentList.Add("kiln-local-supervisor");
        start.ArgumentList.Add(files.SupervisorLogPath);
        if (PosixProcesses.Setsid is { } setsid)
        {
            start.ArgumentList.Add(setsid);
        }
        foreach (string part in command)
        {
            start.ArgumentList.Add(part);
        }
        start.ArgumentList.Add("local-supervise");
        start.ArgumentList.Add(files.Directory);
        using Process process = Process.Start(start) ?? throw new LaunchException("local: the supervisor did not start.");
        files.WriteSupervisor(PosixProcesses.Identify(process.Id) ?? new ProcessIdentity(process.Id, 0));
    }

    private Dictionary<string, string> ResolveOptions(IReadOnlyDictionary<string, string> options)
    {
        var resolved = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [CancelGraceOption] = DefaultCancelGraceSeconds.ToString(CultureInfo.InvariantCulture),
            [SuperviseOption] = Detached,
        };
        foreach ((string key, string value) in options)
        {
            if (RunOptions.All(o => o.Name != key))
            {
                throw new LaunchException($"local: unknown run option \"{key}\"; the local scheduler takes {string.Join(", ", RunOptions.Select(o => o.Name))} (kiln runopts local).");
            }
            resolved[key] = value;
        }
        if (!double.TryParse(resolved[CancelGraceOption], NumberStyles.Float, CultureInfo.InvariantCulture, out double grace) || grace < 0 || grace > 3600)
        {
            throw new LaunchException($"local: {CancelGraceOption}={resolved[CancelGraceOption]} is not a number of seconds between 0 and 3600.");
        }
        if (resolved[SuperviseOption] is not (Detached or Inline))
        {
            throw new LaunchException($"local: {SuperviseOption}={resolved[SuperviseOption]} is neither {Detached} nor {Inline}.");
        }
        if (resolved.TryGetValue(LogDirOption, out string? logDir) && string.IsNullOrWhiteSpace(logDir))
        {
            throw new LaunchException($"local: {LogDirOption} is empty.");
        }
        return resolved;
    }

    private static string ResolveEntrypoint(string role, string entrypoint, string workingDirectory, string? path)
    {
        if (string.IsNullOrWhiteSpace(entrypoint))
        {
            throw new LaunchException($"local: role {role} has no entrypoint.");
        }
        if (entrypoint.Contains('/', StringComparison.Ordinal))
        {
            string full = Path.GetFullPath(entrypoint, workingDirectory);
            return PosixProcesses.IsExecutableFile(full)
                ? full
                : throw new LaunchException($"local: role {role}: entrypoint {full} is not an executable file.");
        }
        return PosixProcesses.FindOnPath(entrypoint, path)
            ?? throw new LaunchException($"local: role {role}: entrypoint \"{entrypoint}\" is not an executable on PATH.");
    }

    private static string Describe(LocalAppSpec spec)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"local app {spec.AppId}: {spec.Roles.Sum(r => r.Replicas.Count)} processes on this machine, each in a session of its own under a supervisor; SIGTERM then SIGKILL after {spec.CancelGraceSeconds} s on cancel\n");
        foreach (LocalRoleSpec role in spec.Roles)
        {
            text.Append(CultureInfo.InvariantCulture, $"role {role.Name}: {role.Replicas.Count} replica(s), max retries {role.MaxRetries}, retry policy {role.RetryPolicy.ToString().ToUpperInvariant()}\n");
            foreach (LocalReplicaSpec replica in role.Replicas)
            {
                text.Append(CultureInfo.InvariantCulture, $"  [{replica.Id}] cd {Quote(replica.WorkingDirectory)} && ");
                foreach ((string key, string value) in replica.Env.OrderBy(e => e.Key, StringComparer.Ordinal))
                {
                    text.Append(CultureInfo.InvariantCulture, $"{key}={Quote(value)} ");
                }
                text.Append(Quote(replica.Entrypoint));
                foreach (string arg in replica.Args)
                {
                    text.Append(' ').Append(Quote(arg));
                }
                text.Append('\n');
                text.Append(CultureInfo.InvariantCulture, $"      logs: {replica.LogDirectory}/{{stdout.log,stderr.log,combined.jsonl}}\n");
            }
        }
        return text.ToString();
    }

    private static string Quote(string value) =>
        value.Length > 0 && value.All(c => char.IsAsciiLetterOrDigit(c) || c is '/' or '.' or '-' or '_' or ':' or '=' or ',' or '+' or '@')
            ? value
            : "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static string NewAppId(string name)
    {
        var prefix = new StringBuilder();
        foreach (char c in name.ToLowerInvariant())
        {
            prefix.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        }
        string cleaned = prefix.ToString().Trim('-');
        if (cleaned.Length == 0)
        {
            cleaned = "app";
        }
        if (cleaned.Length > 40)
        {
            cleaned = cleaned[..40].TrimEnd('-');
        }
        const string Alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
        return cleaned + "-" + RandomNumberGenerator.GetString(Alphabet, 6);
    }

    private static bool IsAppId(string appId) =>
        !string.IsNullOrEmpty(appId) && appId is not ("." or "..") && appId.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    private string ExpandHome(string path) =>
        path == "~" || path.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(_options.GetEnvironmentVariable("HOME") ?? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.Length > 2 ? path[2..] : "")
            : path;

    private static void TryDelete(string directory)
    {
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: an empty or partial app folder lists as nothing.
        }
    }
}
