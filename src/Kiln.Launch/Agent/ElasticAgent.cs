using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Kiln.Launch.Rendezvous;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Launch.Agent;

/// <summary>How an agent ended.</summary>
/// <param name="ExitCode">0 success, 1 failure, 143 stopped by SIGTERM (the CLI maps cancellation).</param>
/// <param name="State">SUCCEEDED, FAILED or STOPPED.</param>
/// <param name="Restarts">Job-wide restarts after worker failures.</param>
/// <param name="Error">The first failure seen by this agent, as written to error.json; null on success.</param>
internal sealed record AgentResult(int ExitCode, string State, int Restarts, JsonObject? Error);

/// <summary>
/// torchrun's elastic agent: rendezvous, start nproc-per-node workers with torchrun's environment, watch them every
/// monitor interval, restart the whole local group with fresh ranks after a failure (up to the job-wide
/// <c>--max-restarts</c>) or a membership change, exit barrier on success. docs/launch-agent.md has the contract.
/// </summary>
internal sealed class ElasticAgent
{
    /// <summary>The default c10d store port (torch's).</summary>
    public const int DefaultStorePort = 29400;

    private static readonly JsonSerializerOptions s_indented = new() { WriteIndented = true };

    private readonly AgentOptions _options;
    private readonly ILogger _logger;
    private readonly string _nodeId;
    private readonly string _workerFiles;
    private JsonObject? _firstError;
    private RendezvousRound? _round;
    private int _restarts;

    public ElasticAgent(AgentOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Entrypoint.Count == 0 || string.IsNullOrEmpty(options.Entrypoint[0]))
        {
            throw new LaunchException("kiln agent needs an entrypoint after --.");
        }
        if (options.ProcessesPerNode < 1)
        {
            throw new LaunchException($"--nproc-per-node {options.ProcessesPerNode} must be at least 1.");
        }
        if (options.Launcher is not (AgentOptions.ProcessLauncher or AgentOptions.MpirunLauncher))
        {
            throw new LaunchException($"--launcher {options.Launcher} is unknown; known: {AgentOptions.ProcessLauncher}, {AgentOptions.MpirunLauncher}.");
        }
        if (options.Launcher == AgentOptions.MpirunLauncher && !options.Standalone && options.MaxNodes != 1)
        {
            string nodes = options.MinNodes == options.MaxNodes ? $"{options.MaxNodes}" : $"{options.MinNodes}:{options.MaxNodes}";
            throw new LaunchException($"--launcher mpirun runs the workers of one node only (--nnodes 1), not --nnodes {nodes}; use --launcher process for jobs of several nodes.");
        }
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _nodeId = string.Create(CultureInfo.InvariantCulture, $"{Dns.GetHostName()}_{Environment.ProcessId}_{Guid.NewGuid().ToString("N")[..8]}");
        _workerFiles = options.LogDirectory ?? Path.Combine(Path.GetTempPath(), $"kiln-agent-{options.RunId}-{Environment.ProcessId}-{_nodeId[^8..]}");
    }

    /// <summary>Called when a worker group has started (tests, benchmarks): the round and the workers' pids.</summary>
    public Action<RendezvousRound, IReadOnlyList<int>>? WorkersStarted { get; init; }

    /// <summary>Runs the agent until the job succeeds, fails, or <paramref name="cancellationToken"/> fires (STOPPED).</summary>
    public async Task<AgentResult> RunAsync(CancellationToken cancellationToken)
    {
        WriteState("INIT");
        TcpStoreServer? server = null;
        IKeyValueStore? store = null;
        ElasticRendezvous? rendezvous = null;
        using var heartbeatStop = new CancellationTokenSource();
        Task heartbeats = Task.CompletedTask;
        try
        {
            (server, store) = await OpenStoreAsync(cancellationToken).ConfigureAwait(false);
            rendezvous = new ElasticRendezvous(store, Settings(), _nodeId, _logger);
            heartbeats = rendezvous.RunHeartbeatsAsync(heartbeatStop.Token);
            AgentResult result = await LoopAsync(rendezvous, heartbeats, cancellationToken).ConfigureAwait(false);
            await LeaveAsync(rendezvous, server is not null).ConfigureAwait(false);
            return result;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            AgentLog.Stopped(_logger, _nodeId);
            WriteState("STOPPED");
            return new AgentResult(143, "STOPPED", _restarts, _firstError);
        }
        catch (LaunchException ex)
        {
            AgentResult result = Fail(ex.Message, null);
            if (rendezvous is not null)
            {
                await LeaveAsync(rendezvous, server is not null).ConfigureAwait(false);
            }
            return result;
        }
        catch (Exception ex) when (ex is IOException or SocketException or InvalidOperationException)
        {
            AgentLog.StoreLost(_logger, _nodeId, ex.Message);
            return Fail($"the rendezvous store is unreachable: {ex.Message}", null);
        }
        finally
        {
            await heartbeatStop.CancelAsync().ConfigureAwait(false);
            try
            {
                await heartbeats.ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or InvalidOperationException)
            {
                // The heartbeat loop ends with the store.
            }
            if (store is not null && server is null)
            {
                await store.DisposeAsync().ConfigureAwait(false);
            }
            if (server is not null)
            {
                await server.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Counts this node out; the store's host then stays up (at most 5 s) until the round's other nodes have left,
    /// since they read the outcome from its store. Best effort: the store may already be gone.
    /// </summary>
    private async Task LeaveAsync(ElasticRendezvous rendezvous, bool hosting)
    {
        try
        {
            using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await rendezvous.LeaveAsync(bound.Token).ConfigureAwait(false);
            if (hosting && _round is not null)
            {
                await rendezvous.WaitForOthersToLeaveAsync(_round.GroupWorldSize, TimeSpan.FromSeconds(5), bound.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or InvalidOperationException)
        {
            // Leaving is a courtesy to the other nodes.
        }
    }

    private async Task<AgentResult> LoopAsync(ElasticRendezvous rendezvous, Task heartbeats, CancellationToken cancellationToken)
    {
        while (true)
        {
            WriteState("RENDEZVOUS");
            RendezvousRound round = await rendezvous.NextRoundAsync(cancellationToken).ConfigureAwait(false);
            _round = round;
            _restarts = round.RestartCount;
            WorkerGroup group = StartWorkers(round);
            await using (group.ConfigureAwait(false))
            {
                WriteState("RUNNING");
                string outcome;
                string? reason;
                try
                {
                    (outcome, reason) = await MonitorAsync(rendezvous, round, group, heartbeats, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // SIGTERM to the agent: SIGTERM to the workers (time to checkpoint), SIGKILL after the grace period.
                    await group.StopAsync(_options.StopGracePeriod, CancellationToken.None).ConfigureAwait(false);
                    throw;
                }
                switch (outcome)
                {
                    case "succeeded":
                        long barrierStart = Stopwatch.GetTimestamp();
                        RoundAction action = await rendezvous.ExitBarrierAsync(round, _options.ExitBarrierTimeout, cancellationToken).ConfigureAwait(false);
                        if (action == RoundAction.Restart)
                        {
                            AgentLog.Restarting(_logger, _nodeId, "another node's workers failed after this node's succeeded");
                            continue;
                        }
                        if (action == RoundAction.Fail)
                        {
                            return Fail(await rendezvous.GetJobFailureAsync(cancellationToken).ConfigureAwait(false) ?? "the job failed on another node", null);
                        }
                        if (Stopwatch.GetElapsedTime(barrierStart) >= _options.ExitBarrierTimeout)
                        {
                            AgentLog.ExitBarrierTimeout(_logger, _nodeId, _options.ExitBarrierTimeout.TotalSeconds);
                        }
                        AgentLog.Succeeded(_logger, _nodeId, _restarts);
                        WriteState("SUCCEEDED");
                        return new AgentResult(0, "SUCCEEDED", _restarts, null);
                    case "restart":
                        AgentLog.Restarting(_logger, _nodeId, reason!);
                        WriteState("RESTARTING");
                        await group.StopAsync(_options.StopGracePeriod, cancellationToken).ConfigureAwait(false);
                        continue;
                    case "failed":
                        await group.StopAsync(_options.StopGracePeriod, cancellationToken).ConfigureAwait(false);
                        if (await rendezvous.ReportFailureAsync(round, reason!, cancellationToken).ConfigureAwait(false))
                        {
                            AgentLog.Restarting(_logger, _nodeId, reason!);
                            WriteState("RESTARTING");
                            continue;
                        }
                        return Fail(await rendezvous.GetJobFailureAsync(cancellationToken).ConfigureAwait(false) ?? reason!, null);
                    default:
                        await group.StopAsync(_options.StopGracePeriod, cancellationToken).ConfigureAwait(false);
                        return Fail(reason ?? "the job failed on another node", null);
                }
            }
        }
    }

    private async Task<(string Outcome, string? Reason)> MonitorAsync(ElasticRendezvous rendezvous, RendezvousRound round, WorkerGroup group, Task heartbeats, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (WorkerGroupState state, WorkerFailure? failure) = group.Poll();
            if (state == WorkerGroupState.Failed)
            {
                await group.StopAsync(_options.StopGracePeriod, cancellationToken).ConfigureAwait(false);
                string cause = RecordFailure(round, failure!);
                return ("failed", cause);
            }
            if (state == WorkerGroupState.Succeeded)
            {
                return ("succeeded", null);
            }
            if (heartbeats.IsFaulted)
            {
                await heartbeats.ConfigureAwait(false); // rethrows the store failure
            }
            (RoundAction action, string? reason) = await rendezvous.CheckAsync(round, cancellationToken).ConfigureAwait(false);
            if (action == RoundAction.Restart)
            {
                return ("restart", reason);
            }
            if (action == RoundAction.Fail)
            {
                return ("fail", reason);
            }
            await Task.Delay(_options.MonitorInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private WorkerGroup StartWorkers(RendezvousRound round)
    {
        int nproc = _options.ProcessesPerNode;
        int worldSize = round.GroupWorldSize * nproc;
        string? attemptLogs = _options.LogDirectory is null ? null : Path.Combine(_options.LogDirectory, $"attempt_{round.RestartCount}");
        string attemptFiles = Path.Combine(_workerFiles, $"attempt_{round.RestartCount}");
        var environments = new List<IReadOnlyDictionary<string, string?>>();
        var ranks = new List<int>();
        var errorFiles = new List<string>();
        for (int localRank = 0; localRank < nproc; localRank++)
        {
            int rank = (round.GroupRank * nproc) + localRank;
            string errorFile = Path.Combine(attemptFiles, localRank.ToString(CultureInfo.InvariantCulture), "error.json");
            var env = new Dictionary<string, string?>(StringComparer.Ordinal)
            {
                // The launcher's error file is the agent's, not the workers'.
                ["KILN_ERROR_FILE"] = null,
                ["RANK"] = Text(rank),
                ["LOCAL_RANK"] = Text(localRank),
                ["WORLD_SIZE"] = Text(worldSize),
                ["LOCAL_WORLD_SIZE"] = Text(nproc),
                ["GROUP_RANK"] = Text(round.GroupRank),
                ["GROUP_WORLD_SIZE"] = Text(round.GroupWorldSize),
                ["ROLE_RANK"] = Text(rank),
                ["ROLE_WORLD_SIZE"] = Text(worldSize),
                ["ROLE_NAME"] = _options.Role,
                ["MASTER_ADDR"] = round.MasterAddress,
                ["MASTER_PORT"] = Text(round.MasterPort),
                ["TORCHELASTIC_RESTART_COUNT"] = Text(round.RestartCount),
                ["TORCHELASTIC_MAX_RESTARTS"] = Text(_options.MaxRestarts),
                ["TORCHELASTIC_RUN_ID"] = _options.RunId,
                ["TORCHELASTIC_ERROR_FILE"] = errorFile,
                // Kiln's store is not torch's TCPStore: workers must open their own on MASTER_PORT.
                ["TORCHELASTIC_USE_AGENT_STORE"] = "False",
            };
            if (Environment.GetEnvironmentVariable("TORCH_NCCL_ASYNC_ERROR_HANDLING") is null)
            {
                env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1";
            }
            if (nproc > 1 && Environment.GetEnvironmentVariable("OMP_NUM_THREADS") is null)
            {
                env["OMP_NUM_THREADS"] = "1";
            }
            // NCCL_NVLS_ENABLE (and everything else the agent was given) is inherited unchanged; under mpirun the
            // variables that decide the workers' behaviour are also passed with -x, so the command line shows them.
            if (_options.Launcher == AgentOptions.MpirunLauncher)
            {
                // mpirun gives each rank's stdout a pseudo-terminal, though it ends where the agent's stdout goes (a log
                // file, usually); programs such as .NET's console would write terminal control codes into it.
                env["TERM"] = "dumb";
                foreach (string name in (string[])["NCCL_NVLS_ENABLE", "OMP_NUM_THREADS"])
                {
                    if (Environment.GetEnvironmentVariable(name) is { } value)
                    {
                        env[name] = value;
                    }
                }
            }
            environments.Add(env);
            ranks.Add(rank);
            errorFiles.Add(errorFile);
        }
        WorkerGroup group = _options.Launcher == AgentOptions.MpirunLauncher
            ? WorkerGroup.StartUnderMpirun(_options.Entrypoint, environments, ranks, attemptLogs, errorFiles)
            : WorkerGroup.Start(_options.Entrypoint, environments, ranks, attemptLogs, errorFiles);
        AgentLog.WorkersStarted(_logger, _nodeId, nproc, ranks[0], ranks[^1], worldSize, round.RestartCount);
        WorkersStarted?.Invoke(round, group.ProcessIds);
        return group;
    }

    private string RecordFailure(RendezvousRound round, WorkerFailure failure)
    {
        string how = failure.Signal is { } signal ? $"exit code {failure.ExitCode} ({signal})" : $"exit code {failure.ExitCode}";
        string cause = failure.Rank >= 0
            ? $"worker rank {failure.Rank} (local rank {failure.LocalRank}, group rank {round.GroupRank}) failed with {how}"
            : $"mpirun (group rank {round.GroupRank}) failed with {how} without naming the rank";
        AgentLog.WorkerFailed(_logger, _nodeId, failure.Rank, failure.LocalRank, how);
        if (_firstError is null)
        {
            var error = new JsonObject
            {
                ["message"] = cause,
                ["rank"] = failure.Rank,
                ["local_rank"] = failure.LocalRank,
                ["group_rank"] = round.GroupRank,
                ["exit_code"] = failure.ExitCode,
                ["signal"] = failure.Signal,
                ["timestamp"] = failure.Timestamp.ToString("O", CultureInfo.InvariantCulture),
                ["restart_count"] = round.RestartCount,
                ["node"] = _nodeId,
                ["stderr_tail"] = new JsonArray([.. failure.StderrTail.Select(l => (JsonNode?)JsonValue.Create(l))]),
            };
            if (TryReadJson(failure.ErrorFile) is { } workerError)
            {
                error["worker_error"] = workerError;
            }
            _firstError = error;
            WriteErrorFiles(error);
        }
        return cause;
    }

    private AgentResult Fail(string reason, JsonObject? error)
    {
        AgentLog.Failed(_logger, _nodeId, reason);
        if (_firstError is null)
        {
            _firstError = error ?? new JsonObject
            {
                ["message"] = reason,
                ["timestamp"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
                ["restart_count"] = _restarts,
                ["node"] = _nodeId,
            };
            WriteErrorFiles(_firstError);
        }
        else
        {
            _firstError["job_failure"] = reason;
            WriteErrorFiles(_firstError);
        }
        WriteState("FAILED");
        return new AgentResult(1, "FAILED", _restarts, _firstError);
    }

    private void WriteErrorFiles(JsonObject error)
    {
        string json = error.ToJsonString(s_indented);
        if (_options.LogDirectory is { } logs)
        {
            WriteAtomically(Path.Combine(logs, "error.json"), json);
        }
        foreach (string file in new[] { _options.ErrorFile, _options.LauncherErrorFile }.OfType<string>().Distinct(StringComparer.Ordinal))
        {
            WriteAtomically(file, json);
        }
    }

    /// <summary>Writes <c>&lt;log-dir&gt;/agent-state.json</c>: {state, restarts, round, group_rank, group_world_size, error, pid, updated}.</summary>
    private void WriteState(string state)
    {
        if (_options.StateDirectory is not { } logs)
        {
            return;
        }
        var json = new JsonObject
        {
            ["state"] = state,
            ["restarts"] = _restarts,
            ["max_restarts"] = _options.MaxRestarts,
            ["round"] = _round?.Round,
            ["group_rank"] = _round?.GroupRank,
            ["group_world_size"] = _round?.GroupWorldSize,
            ["run_id"] = _options.RunId,
            ["node"] = _nodeId,
            ["pid"] = Environment.ProcessId,
            ["error"] = _firstError?.DeepClone(),
            ["updated"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
        };
        WriteAtomically(Path.Combine(logs, "agent-state.json"), json.ToJsonString(s_indented));
    }

    private static void WriteAtomically(string path, string text)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            string temporary = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllText(temporary, text);
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // State files are best effort; the exit code is the contract.
        }
    }

    private static JsonNode? TryReadJson(string path)
    {
        try
        {
            return File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path)) : null;
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private RendezvousSettings Settings()
    {
        bool isStatic = _options.Backend == "static";
        string localAddress = _options.LocalAddress ?? DefaultLocalAddress();
        return new RendezvousSettings
        {
            RunId = _options.RunId,
            MinNodes = _options.Standalone ? 1 : _options.MinNodes,
            MaxNodes = _options.Standalone ? 1 : _options.MaxNodes,
            JoinTimeout = _options.JoinTimeout,
            LastCallTimeout = _options.LastCallTimeout,
            HeartbeatTimeout = _options.HeartbeatTimeout,
            MaxRestarts = _options.MaxRestarts,
            LocalAddress = localAddress,
            FixedGroupRank = isStatic ? _options.NodeRank ?? 0 : null,
            FixedMaster = isStatic ? (_options.MasterAddress, _options.MasterPort) : null,
        };
    }

    private string DefaultLocalAddress()
    {
        if (_options.Standalone || _options.Endpoint is null)
        {
            return "127.0.0.1";
        }
        (string host, _) = AgentOptions.ParseEndpoint(_options.Endpoint, DefaultStorePort);
        return IsLoopback(host) ? "127.0.0.1" : Dns.GetHostName();
    }

    private async Task<(TcpStoreServer? Server, IKeyValueStore Store)> OpenStoreAsync(CancellationToken cancellationToken)
    {
        string backend = _options.Backend;
        if (_options.Standalone || (backend is "static" or "c10d" && _options.MaxNodes == 1 && _options.Endpoint is null))
        {
            return (null, new MemoryKeyValueStore());
        }
        if (backend is "static" or "c10d")
        {
            string endpoint = _options.Endpoint
                ?? (backend == "static"
                    ? string.Create(CultureInfo.InvariantCulture, $"{_options.MasterAddress}:{_options.MasterPort + 1}")
                    : throw new LaunchException("--rdzv-backend c10d needs --rdzv-endpoint HOST[:PORT] (or --standalone)."));
            (string host, int port) = AgentOptions.ParseEndpoint(endpoint, DefaultStorePort);
            bool? host0 = backend == "static" ? (_options.NodeRank ?? 0) == 0 : _options.IsHost;
            if (host0 != false && IsLocal(host))
            {
                try
                {
                    IPAddress address = IsLoopback(host) ? IPAddress.Loopback : IPAddress.Any;
                    TcpStoreServer server = TcpStoreServer.Start(new IPEndPoint(address, port), _logger);
                    AgentLog.StoreHosted(_logger, _nodeId, server.EndPoint);
                    return (server, server.Store);
                }
                catch (SocketException) when (host0 != true)
                {
                    // Another agent on this host holds the port: join its store.
                }
            }
            return (null, await TcpStoreClient.ConnectAsync(host, port, TimeSpan.FromSeconds(Math.Min(60, _options.JoinTimeout.TotalSeconds)), cancellationToken).ConfigureAwait(false));
        }
        if (RendezvousStores.TryGet(backend, out Func<string, IKeyValueStore> factory))
        {
            if (_options.Endpoint is null)
            {
                throw new LaunchException($"--rdzv-backend {backend} needs --rdzv-endpoint.");
            }
            return (null, factory(_options.Endpoint));
        }
        string known = string.Join(", ", RendezvousStores.Names.Prepend("static").Prepend("c10d"));
        throw new LaunchException($"--rdzv-backend {backend} is unknown; known: {known}.");
    }

    private static bool IsLoopback(string host) =>
        host is "localhost" || (IPAddress.TryParse(host, out IPAddress? address) && IPAddress.IsLoopback(address));

    private static bool IsLocal(string host)
    {
        if (IsLoopback(host) || string.Equals(host, Dns.GetHostName(), StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }
        if (!IPAddress.TryParse(host, out IPAddress? address))
        {
            return false;
        }
        return System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Any(u => u.Address.Equals(address));
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
