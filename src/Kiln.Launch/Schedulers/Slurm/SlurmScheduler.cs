using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>
/// The <c>slurm</c> scheduler: an app becomes one sbatch script (a heterogeneous job with one component per role, see
/// <see cref="SlurmScript"/>), submitted with <c>sbatch --parsable</c>; the app id is the Slurm job id. State comes from
/// <c>squeue --json</c> (or <c>squeue -o</c> where JSON is missing) and, once squeue forgot the job, from
/// <c>sacct --parsable2</c>; each replica's exit file refines its own state. Logs are the replicas' files in the job folder.
/// </summary>
/// <remarks>Thread-safe: calls share no mutable state except a cached "squeue has --json" answer.</remarks>
internal sealed class SlurmScheduler : IScheduler
{
    /// <summary>The session part of handles: <c>slurm:///JOBID</c>.</summary>
    private const string Session = "";

    private static readonly TimeSpan s_tailPoll = TimeSpan.FromMilliseconds(200);
    private static readonly TimeSpan s_statePoll = TimeSpan.FromSeconds(1);

    private readonly SlurmCommands _commands;
    private readonly TimeProvider _timeProvider;
    private readonly Func<string> _currentDirectory;

    /// <summary>null until the first squeue call tells whether <c>squeue --json</c> works here.</summary>
    private volatile StrongBox<bool>? _jsonWorks;

    /// <summary>Creates the scheduler.</summary>
    /// <param name="slurmConf">The <c>slurm.conf</c> passed as <c>SLURM_CONF</c> to every Slurm tool; null: the process environment's.</param>
    /// <param name="timeProvider">Clock for submission names; null: the system clock.</param>
    /// <param name="which">Finds a tool on PATH (tests); null: search <c>PATH</c>.</param>
    /// <param name="currentDirectory">The folder apps are submitted from (tests); null: the process's current folder.</param>
    public SlurmScheduler(string? slurmConf = null, TimeProvider? timeProvider = null, Func<string, string?>? which = null, Func<string>? currentDirectory = null)
    {
        _commands = new SlurmCommands(slurmConf, which);
        _timeProvider = timeProvider ?? TimeProvider.System;
        _currentDirectory = currentDirectory ?? Directory.GetCurrentDirectory;
    }

    /// <summary>False: never use <c>squeue --json</c>, read squeue's <c>-o</c> text (for squeue builds without JSON, and tests).</summary>
    public bool UseSqueueJson
    {
        get => _jsonWorks?.Value ?? true;
        init => _jsonWorks = value ? null : new StrongBox<bool>(false);
    }

    /// <inheritdoc />
    public string Name => "slurm";

    /// <inheritdoc />
    public IReadOnlyList<RunOption> RunOptions => SlurmRunOptions.Declared;

    /// <inheritdoc />
    public DryRunInfo SubmitDryRun(AppDef app, IReadOnlyDictionary<string, string> options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        _commands.EnsureTools();
        string cwd = _currentDirectory();
        SlurmScript.Validate(app);
        SlurmRunOptions parsed = SlurmRunOptions.Parse(options, cwd);
        string script = SlurmScript.Build(app, parsed, cwd);
        string stamp = _timeProvider.GetUtcNow().ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        string submission = $"{app.Name}-{stamp}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2))}";
        return new DryRunInfo(submission, app, script)
        {
            Artifacts = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["script"] = script,
                ["script_path"] = Path.Combine(parsed.JobDir, submission + ".sbatch"),
                ["roles"] = SlurmScript.RolesText(app),
            },
            Options = parsed.ToDictionary(),
        };
    }

    /// <inheritdoc />
    public async Task<AppHandle> SubmitAsync(DryRunInfo request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        _commands.EnsureTools();
        if (!request.Artifacts.TryGetValue("script", out string? script) || !request.Artifacts.TryGetValue("script_path", out string? scriptPath)
            || !request.Options.TryGetValue("job_dir", out string? jobDir))
        {
            throw new LaunchException("this request was not made by the slurm scheduler's dry run (no script)");
        }
        Directory.CreateDirectory(jobDir);
        await File.WriteAllTextAsync(scriptPath, script, cancellationToken).ConfigureAwait(false);
        File.SetUnixFileMode(scriptPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        CommandResult result = await _commands.RunAsync("sbatch", ["--parsable", scriptPath], cancellationToken, jobDir).ConfigureAwait(false);
        string jobId = result.Stdout.Trim().Split(';')[0].Trim();
        if (!result.Succeeded || !long.TryParse(jobId, NumberStyles.None, CultureInfo.InvariantCulture, out _))
        {
            throw new LaunchException($"sbatch refused {scriptPath}: {result.FirstErrorLine}");
        }
        // The script writes this file too when it starts; written here as well so that a pending job describes its roles.
        if (request.Artifacts.TryGetValue("roles", out string? roles))
        {
            await File.WriteAllTextAsync(SlurmScript.RolesFile(jobDir, jobId), roles, cancellationToken).ConfigureAwait(false);
        }
        return new AppHandle(Name, Session, jobId);
    }

    /// <inheritdoc />
    public async Task<AppStatus?> DescribeAsync(string appId, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(appId);
        IReadOnlyList<SlurmJobRecord> records = await FindAsync(appId, cancellationToken).ConfigureAwait(false);
        return records.Count == 0 ? null : BuildStatus(appId, records);
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<string> LogAsync(string appId, string role, int? replica, LogQuery query, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(appId);
        ArgumentException.ThrowIfNullOrWhiteSpace(role);
        ArgumentNullException.ThrowIfNull(query);
        if (query.Since is not null || query.Until is not null)
        {
            throw new LaunchException("slurm logs carry no timestamps: --since/--until are not supported by the slurm scheduler");
        }
        string[] extensions = query.Stream switch
        {
            null or "" => ["out", "err"],
            "stdout" => ["out"],
            "stderr" => ["err"],
            _ => throw new LaunchException($"unknown log stream \"{query.Stream}\"; use stdout or stderr"),
        };
        Regex? filter = query.Regex is null ? null : new Regex(query.Regex, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));

        IReadOnlyList<SlurmJobRecord> records = await FindAsync(appId, cancellationToken).ConfigureAwait(false);
        if (records.Count == 0)
        {
            throw new LaunchException($"slurm job {appId} is not known to squeue or sacct");
        }
        string jobDir = records[0].WorkDir;
        List<(string Name, int Replicas)> roles = ReadRoles(jobDir, appId, records);
        (string Name, int Replicas) found = roles.FirstOrDefault(r => r.Name == role);
        if (found.Name is null)
        {
            throw new LaunchException($"slurm job {appId} has no role \"{role}\" (roles: {string.Join(", ", roles.Select(r => r.Name))})");
        }
        if (replica is int r0 && (r0 < 0 || r0 >= found.Replicas))
        {
            throw new LaunchException($"role \"{role}\" of slurm job {appId} has replicas 0..{found.Replicas - 1}, not {r0}");
        }
        IEnumerable<int> replicas = replica is int one ? [one] : Enumerable.Range(0, found.Replicas);
        var files = replicas.SelectMany(i => extensions.Select(e => new LogFollower(SlurmScript.ReplicaLog(jobDir, appId, role, i, e)))).ToList();

        if (!query.Tail)
        {
            foreach (LogFollower file in files)
            {
                foreach (string line in file.ReadAll())
                {
                    if (filter is null || filter.IsMatch(line))
                    {
                        yield return line;
                    }
                }
            }
            yield break;
        }

        long? lastCheck = null;
        bool over = false;
        while (true)
        {
            // Read once more after the job ended: the last lines may have landed since the last read.
            if (!over && (lastCheck is null || _timeProvider.GetElapsedTime(lastCheck.Value) >= s_statePoll))
            {
                lastCheck = _timeProvider.GetTimestamp();
                AppStatus? status = await DescribeAsync(appId, cancellationToken).ConfigureAwait(false);
                over = status is null || status.State.IsTerminal();
            }
            foreach (LogFollower file in files)
            {
                foreach (string line in file.ReadNew(final: over))
                {
                    if (filter is null || filter.IsMatch(line))
                    {
                        yield return line;
                    }
                }
            }
            if (over)
            {
                yield break;
            }
            await Task.Delay(s_tailPoll, _timeProvider, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async Task CancelAsync(string appId, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(appId);
        CommandResult result = await _commands.RunAsync("scancel", [appId], cancellationToken).ConfigureAwait(false);
        if (result.Succeeded)
        {
            return;
        }
        AppStatus? status = await DescribeAsync(appId, cancellationToken).ConfigureAwait(false);
        if (status is null)
        {
            throw new LaunchException($"slurm job {appId} is not known to squeue or sacct");
        }
        if (!status.State.IsTerminal())
        {
            throw new LaunchException($"scancel {appId} failed: {result.FirstErrorLine}");
        }
    }

    /// <inheritdoc />
    public async Task<IReadOnlyList<ListedApp>> ListAsync(CancellationToken cancellationToken)
    {
        string user = Environment.UserName;
        var records = new List<SlurmJobRecord>();
        // 22.05 ignores filters with --json and prints every job: keep the user's own.
        List<SlurmJobRecord>? fromJson = await SqueueJsonAsync(["--me"], cancellationToken).ConfigureAwait(false);
        if (fromJson is not null)
        {
            records.AddRange(fromJson.Where(r => r.User == user));
        }
        else
        {
            CommandResult text = await _commands.RunAsync("squeue", ["--me", "--noheader", "--states=all", "--format=" + SlurmJobRecords.SqueueFormat], cancellationToken).ConfigureAwait(false);
            if (text.Succeeded)
            {
                records.AddRange(SlurmJobRecords.ParseSqueueText(text.Stdout));
            }
        }
        if (_commands.Has("sacct"))
        {
            // Jobs squeue has forgotten (MinJobAge); nothing when the cluster keeps no accounting.
            CommandResult sacct = await _commands.RunAsync(
                "sacct", ["--parsable2", "--noheader", "--allocations", "--starttime=now-7days", "--user=" + user, "--format=" + SlurmJobRecords.SacctFormat],
                cancellationToken).ConfigureAwait(false);
            if (sacct.Succeeded)
            {
                var known = records.Select(r => r.JobId).ToHashSet(StringComparer.Ordinal);
                records.AddRange(SlurmJobRecords.ParseSacct(sacct.Stdout).Where(r => !known.Contains(r.JobId)));
            }
        }
        return [.. records
            .GroupBy(r => r.JobId, StringComparer.Ordinal)
            .Select(g => g.OrderBy(r => r.Offset).ToList())
            .Select(g => new ListedApp(new AppHandle(Name, Session, g[0].JobId), AppStateOf(g), g[0].Name))
            .OrderByDescending(a => long.TryParse(a.Handle.AppId, NumberStyles.None, CultureInfo.InvariantCulture, out long id) ? id : 0)];
    }

    /// <summary>The job's records (one per component, by offset) from squeue, else sacct; empty when neither knows it.</summary>
    internal async Task<IReadOnlyList<SlurmJobRecord>> FindAsync(string appId, CancellationToken cancellationToken)
    {
        if (!long.TryParse(appId, NumberStyles.None, CultureInfo.InvariantCulture, out _))
        {
            throw new LaunchException($"\"{appId}\" is not a Slurm job id");
        }
        List<SlurmJobRecord>? records = await SqueueJsonAsync(["--jobs=" + appId], cancellationToken).ConfigureAwait(false);
        if (records is null)
        {
            CommandResult text = await _commands.RunAsync(
                "squeue", ["--noheader", "--states=all", "--jobs=" + appId, "--format=" + SlurmJobRecords.SqueueFormat], cancellationToken).ConfigureAwait(false);
            records = text.Succeeded ? SlurmJobRecords.ParseSqueueText(text.Stdout) : [];
        }
        records = [.. records.Where(r => r.JobId == appId).OrderBy(r => r.Offset)];
        if (records.Count == 0 && _commands.Has("sacct"))
        {
            CommandResult sacct = await _commands.RunAsync(
                "sacct", ["--parsable2", "--noheader", "--allocations", "--jobs=" + appId, "--format=" + SlurmJobRecords.SacctFormat], cancellationToken).ConfigureAwait(false);
            if (sacct.Succeeded)
            {
                records = [.. SlurmJobRecords.ParseSacct(sacct.Stdout).Where(r => r.JobId == appId).OrderBy(r => r.Offset)];
            }
        }
        return records;
    }

    /// <summary>The app's status from its components and the replicas' exit files.</summary>
    internal static AppStatus BuildStatus(string appId, IReadOnlyList<SlurmJobRecord> records)
    {
        AppState state = AppStateOf(records);
        SlurmJobRecord leader = records[0];
        string jobDir = leader.WorkDir;
        var roles = new List<RoleStatus>();
        string? firstError = null;
        List<(string Name, int Replicas)> declared = ReadRoles(jobDir, appId, records);
        for (int i = 0; i < declared.Count; i++)
        {
            (string name, int count) = declared[i];
            SlurmJobRecord component = records.FirstOrDefault(r => r.Offset == i) ?? leader;
            AppState componentState = SlurmStates.ToAppState(component.State);
            var replicas = new List<ReplicaStatus>(count);
            for (int replica = 0; replica < count; replica++)
            {
                int? exitCode = ReadExitCode(jobDir, appId, name, replica);
                AppState replicaState = state switch
                {
                    // Before start (or requeued): the exit files are an earlier run's.
                    AppState.Pending or AppState.Submitted or AppState.Unknown => state,
                    _ when exitCode is int code => code == 0 ? AppState.Succeeded : AppState.Failed,
                    AppState.Running => AppState.Running,
                    _ => componentState == AppState.Unknown ? state : componentState,
                };
                replicas.Add(new ReplicaStatus(replica, replicaState, name, component.Nodes) { ExitCode = exitCode });
            }
            roles.Add(new RoleStatus(name, replicas));
        }
        if (state == AppState.Failed)
        {
            firstError = FirstFailure(jobDir, appId);
        }
        string message = string.IsNullOrEmpty(leader.Reason) || leader.Reason == "None" ? leader.State : $"{leader.State} ({leader.Reason})";
        return new AppStatus(state)
        {
            NumRestarts = leader.Restarts,
            Message = message,
            StructuredError = firstError,
            Roles = roles,
        };
    }

    /// <summary>The app's state: the first component's, unless another component failed.</summary>
    internal static AppState AppStateOf(IReadOnlyList<SlurmJobRecord> components)
    {
        AppState state = SlurmStates.ToAppState(components[0].State);
        if (state == AppState.Unknown)
        {
            state = components.Select(c => SlurmStates.ToAppState(c.State)).FirstOrDefault(s => s != AppState.Unknown, AppState.Unknown);
        }
        if (state.IsTerminal() && state != AppState.Cancelled && components.Any(c => SlurmStates.ToAppState(c.State) == AppState.Failed))
        {
            state = AppState.Failed;
        }
        return state;
    }

    /// <summary>
    /// Runs <c>squeue --json ARGS</c>; null when this squeue has no JSON (then remembered, and callers read the text
    /// format), an empty list when squeue refuses the job id (a job it no longer knows).
    /// </summary>
    private async Task<List<SlurmJobRecord>?> SqueueJsonAsync(string[] arguments, CancellationToken cancellationToken)
    {
        if (_jsonWorks is { Value: false })
        {
            return null;
        }
        CommandResult result = await _commands.RunAsync("squeue", ["--json", .. arguments], cancellationToken).ConfigureAwait(false);
        if (result.Stdout.TrimStart().StartsWith('{'))
        {
            try
            {
                List<SlurmJobRecord> records = SlurmJobRecords.ParseSqueueJson(result.Stdout);
                _jsonWorks ??= new StrongBox<bool>(true);
                return records;
            }
            catch (JsonException)
            {
                // Not JSON after all: an squeue without the serializer plugin.
            }
        }
        if (result.Stderr.Contains("Invalid job id", StringComparison.OrdinalIgnoreCase))
        {
            return [];
        }
        // squeue built without the JSON serializer prints an error; an old squeue does not know --json at all.
        _jsonWorks = new StrongBox<bool>(false);
        return null;
    }

    /// <summary>The roles file's roles, or one role per component named <c>roleN</c> with one replica when it is gone.</summary>
    private static List<(string Name, int Replicas)> ReadRoles(string jobDir, string appId, IReadOnlyList<SlurmJobRecord> records)
    {
        string path = SlurmScript.RolesFile(jobDir, appId);
        var roles = new List<(string Name, int Replicas)>();
        if (!string.IsNullOrEmpty(jobDir) && File.Exists(path))
        {
            foreach (string line in File.ReadAllLines(path))
            {
                string[] parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 2 && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int count))
                {
                    roles.Add((parts[0], count));
                }
            }
        }
        if (roles.Count == 0)
        {
            roles.AddRange(records.Select(r => (string.Create(CultureInfo.InvariantCulture, $"role{r.Offset}"), 1)));
        }
        return roles;
    }

    private static int? ReadExitCode(string jobDir, string appId, string role, int replica)
    {
        if (string.IsNullOrEmpty(jobDir))
        {
            return null;
        }
        string path = SlurmScript.ReplicaLog(jobDir, appId, role, replica, "exit");
        try
        {
            return File.Exists(path) && int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int code) ? code : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>The replica that failed first (the script's first-failure file) and the last lines of its stderr.</summary>
    private static string? FirstFailure(string jobDir, string appId)
    {
        string path = SlurmScript.FirstFailureFile(jobDir, appId);
        try
        {
            if (string.IsNullOrEmpty(jobDir) || !File.Exists(path))
            {
                return null;
            }
            string[] parts = File.ReadAllText(path).Trim().Split(' ');
            if (parts.Length != 3 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int replica))
            {
                return null;
            }
            return $"{parts[0]}/{replica} exited with {parts[2]}{LastLines(SlurmScript.ReplicaLog(jobDir, appId, parts[0], replica, "err"))}";
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static string LastLines(string path)
    {
        try
        {
            if (!File.Exists(path))
            {
                return "";
            }
            string[] lines = File.ReadAllLines(path);
            string tail = string.Join('\n', lines.Where(l => l.Length > 0).TakeLast(10));
            return tail.Length == 0 ? "" : ":\n" + tail;
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>Reads a log file from where it stopped last time; complete lines only until the final read.</summary>
    private sealed class LogFollower(string path)
    {
        private long _position;
        private readonly StringBuilder _partial = new();

        public List<string> ReadAll() => ReadNew(final: true);

        public List<string> ReadNew(bool final)
        {
            var lines = new List<string>();
            if (!File.Exists(path))
            {
                return lines;
            }
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            {
                if (stream.Length < _position)
                {
                    _position = 0; // truncated: start over
                }
                stream.Seek(_position, SeekOrigin.Begin);
                using var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: false);
                string text = reader.ReadToEnd();
                _position = stream.Position;
                _partial.Append(text);
            }
            string all = _partial.ToString();
            int start = 0;
            int newline;
            while ((newline = all.IndexOf('\n', start)) >= 0)
            {
                lines.Add(all[start..newline].TrimEnd('\r'));
                start = newline + 1;
            }
            _partial.Clear();
            if (start < all.Length)
            {
                if (final)
                {
                    lines.Add(all[start..]);
                }
                else
                {
                    _partial.Append(all, start, all.Length - start);
                }
            }
            return lines;
        }
    }
}
