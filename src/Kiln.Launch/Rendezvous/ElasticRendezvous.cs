using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Launch.Rendezvous;

/// <summary>Settings of one node's rendezvous (torchrun's <c>--nnodes</c>, <c>--rdzv-id</c>, <c>--rdzv-conf</c>).</summary>
internal sealed record RendezvousSettings
{
    /// <summary>The job's run id (<c>--rdzv-id</c>); every key lives under <c>/kiln/rdzv/RUN_ID/</c>.</summary>
    public required string RunId { get; init; }

    /// <summary>The fewest nodes a round runs with.</summary>
    public int MinNodes { get; init; } = 1;

    /// <summary>The most nodes a round admits.</summary>
    public int MaxNodes { get; init; } = 1;

    /// <summary>How long a node may wait for a round to close (<c>join_timeout</c>, default 600 s as torch).</summary>
    public TimeSpan JoinTimeout { get; init; } = TimeSpan.FromSeconds(600);

    /// <summary>Grace for more nodes once MIN have joined (<c>last_call_timeout</c>, default 30 s as torch).</summary>
    public TimeSpan LastCallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A node whose heartbeat does not change for this long is gone (<c>heartbeat_timeout</c>, default 5 s).</summary>
    public TimeSpan HeartbeatTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How often a node beats (a fifth of the timeout, at most 1 s).</summary>
    public TimeSpan HeartbeatInterval => TimeSpan.FromTicks(Math.Min(TimeSpan.FromSeconds(1).Ticks, HeartbeatTimeout.Ticks / 5));

    /// <summary>Restarts after worker failures the whole job may use (<c>--max-restarts</c>, counted per job).</summary>
    public int MaxRestarts { get; init; }

    /// <summary>The address workers of this node are reached at when it is group rank 0 (MASTER_ADDR).</summary>
    public string LocalAddress { get; init; } = "127.0.0.1";

    /// <summary>Static rendezvous: this node's fixed group rank (<c>--node-rank</c>); null for dynamic ranks.</summary>
    public int? FixedGroupRank { get; init; }

    /// <summary>Static rendezvous: the fixed MASTER_ADDR:MASTER_PORT; null to let group rank 0 pick a free port.</summary>
    public (string Address, int Port)? FixedMaster { get; init; }

    /// <summary>How often waits poll the store.</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(20);
}

/// <summary>The outcome of a closed round for this node.</summary>
/// <param name="Round">The round number (0, 1, …).</param>
/// <param name="GroupRank">This node's rank in the round (GROUP_RANK); not stable across rounds.</param>
/// <param name="GroupWorldSize">The nodes in the round (GROUP_WORLD_SIZE).</param>
/// <param name="RestartCount">Job-wide restarts after failures so far (TORCHELASTIC_RESTART_COUNT).</param>
/// <param name="MasterAddress">MASTER_ADDR.</param>
/// <param name="MasterPort">MASTER_PORT.</param>
/// <param name="Participants">The node ids by group rank.</param>
internal sealed record RendezvousRound(long Round, int GroupRank, int GroupWorldSize, int RestartCount, string MasterAddress, int MasterPort, IReadOnlyList<string> Participants);

/// <summary>What a running node must do, from <see cref="ElasticRendezvous.CheckAsync"/>.</summary>
internal enum RoundAction
{
    /// <summary>Keep running.</summary>
    Continue,

    /// <summary>Stop the workers and join the next round (a failure elsewhere, a node waiting or gone).</summary>
    Restart,

    /// <summary>The job has failed; stop and exit.</summary>
    Fail,
}

/// <summary>
/// torch.distributed.elastic's dynamic rendezvous over any <see cref="IKeyValueStore"/>: numbered rounds that close at
/// MAX nodes or at MIN after the last call; late nodes announce themselves as waiting so running nodes start a new round;
/// heartbeats so that a vanished node is noticed within <see cref="RendezvousSettings.HeartbeatTimeout"/>; a job-wide
/// restart counter. The key layout is in docs/launch-agent.md.
/// </summary>
/// <remarks>One instance per node (agent); not thread-safe except <see cref="RunHeartbeatsAsync"/>, which runs beside
/// the other calls.</remarks>
internal sealed class ElasticRendezvous
{
    private readonly IKeyValueStore _store;
    private readonly RendezvousSettings _settings;
    private readonly ILogger _logger;
    private readonly string _prefix;
    private readonly Dictionary<string, (string Value, long SeenAt)> _heartbeatsSeen = new(StringComparer.Ordinal);
    private readonly HashSet<string> _lostNodes = new(StringComparer.Ordinal);
    private long _lastHeartbeatCheck;

    public ElasticRendezvous(IKeyValueStore store, RendezvousSettings settings, string nodeId, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentException.ThrowIfNullOrEmpty(nodeId);
        if (settings.MinNodes < 1 || settings.MaxNodes < settings.MinNodes)
        {
            throw new LaunchException($"--nnodes {settings.MinNodes}:{settings.MaxNodes} is not MIN:MAX with 1 <= MIN <= MAX.");
        }
        _store = store;
        _settings = settings;
        _logger = logger ?? NullLogger.Instance;
        _prefix = $"/kiln/rdzv/{settings.RunId}/";
        NodeId = nodeId;
    }

    /// <summary>This node's id in the store (unique per agent process).</summary>
    public string NodeId { get; }

    /// <summary>Beats this node's heartbeat key until cancelled.</summary>
    public async Task RunHeartbeatsAsync(CancellationToken cancellationToken)
    {
        long beat = 0;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await _store.SetAsync(Key($"hb/{NodeId}"), Encode((++beat).ToString(CultureInfo.InvariantCulture)), cancellationToken).ConfigureAwait(false);
                await Task.Delay(_settings.HeartbeatInterval, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Cancelled mid-write (a store over the network) or mid-wait: either way the beating is over.
        }
    }

    /// <summary>Joins rounds until one closes with this node in it.</summary>
    /// <exception cref="LaunchException">The job failed, or no round closed within the join timeout.</exception>
    public async Task<RendezvousRound> NextRoundAsync(CancellationToken cancellationToken)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(_settings.JoinTimeout.TotalSeconds * Stopwatch.Frequency);
        long waitedRound = -1;
        while (true)
        {
            await ThrowIfJobFailedAsync(cancellationToken).ConfigureAwait(false);
            (long round, int expected, byte[] roundBytes) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
            string? closed = await GetStringAsync($"r{round}/closed", cancellationToken).ConfigureAwait(false);
            if (closed is not null)
            {
                await WaitForNextRoundAsync(round, ParseClosed(closed).Count, waitedRound != round, deadline, cancellationToken).ConfigureAwait(false);
                waitedRound = round;
                continue;
            }

            long index = await _store.AddAsync(Key($"r{round}/joined"), 1, cancellationToken).ConfigureAwait(false);
            await _store.SetAsync(Key($"r{round}/p{index}"), Encode(NodeId), cancellationToken).ConfigureAwait(false);
            StoreLog.Joined(_logger, _settings.RunId, NodeId, round, index);
            (int Count, int Restarts)? result = await WaitForCloseAsync(round, expected, roundBytes, deadline, cancellationToken).ConfigureAwait(false);
            if (result is not { } close)
            {
                continue; // the round moved on before it closed
            }
            if (index > close.Count)
            {
                await WaitForNextRoundAsync(round, close.Count, announce: true, deadline, cancellationToken).ConfigureAwait(false);
                waitedRound = round;
                continue;
            }
            RendezvousRound? complete = await CompleteAsync(round, (int)index - 1, close.Count, close.Restarts, cancellationToken).ConfigureAwait(false);
            if (complete is not null)
            {
                StoreLog.Complete(_logger, _settings.RunId, round, complete.GroupRank, complete.GroupWorldSize, complete.RestartCount, complete.MasterAddress, complete.MasterPort);
                return complete;
            }
        }
    }

    /// <summary>
    /// The monitor's check of a running round: the job failed, the round moved on, a node waits to join (and there is
    /// room), or a participant's heartbeat stopped. Starts the next round itself when needed.
    /// </summary>
    public async Task<(RoundAction Action, string? Reason)> CheckAsync(RendezvousRound round, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(round);
        if (await GetStringAsync("job_failed", cancellationToken).ConfigureAwait(false) is { } failure)
        {
            return (RoundAction.Fail, failure);
        }
        (long current, _, byte[] roundBytes) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
        if (current != round.Round)
        {
            return (RoundAction.Restart, "the rendezvous moved to a new round");
        }
        if (round.GroupWorldSize < _settings.MaxNodes)
        {
            long waiting = await GetCounterAsync($"r{round.Round}/waiting", cancellationToken).ConfigureAwait(false);
            if (waiting > 0)
            {
                await NextRoundAsync(round.Round, roundBytes, round.GroupWorldSize + (int)waiting, $"{waiting} node(s) waiting to join", cancellationToken).ConfigureAwait(false);
                return (RoundAction.Restart, "nodes are waiting to join");
            }
        }
        long now = Stopwatch.GetTimestamp();
        if (Stopwatch.GetElapsedTime(_lastHeartbeatCheck, now) < _settings.HeartbeatInterval / 2)
        {
            return (RoundAction.Continue, null);
        }
        _lastHeartbeatCheck = now;
        List<string> lost = await FindLostNodesAsync(round, cancellationToken).ConfigureAwait(false);
        if (lost.Count == 0)
        {
            return (RoundAction.Continue, null);
        }
        int alive = round.GroupWorldSize - lost.Count;
        string reason = $"node(s) {string.Join(", ", lost)} sent no heartbeat for {_settings.HeartbeatTimeout.TotalSeconds:0.###} s";
        if (alive < _settings.MinNodes)
        {
            string message = $"{reason}; {alive} node(s) left, fewer than --nnodes MIN {_settings.MinNodes}";
            await FailJobAsync(message, cancellationToken).ConfigureAwait(false);
            return (RoundAction.Fail, message);
        }
        await NextRoundAsync(round.Round, roundBytes, alive, reason, cancellationToken).ConfigureAwait(false);
        return (RoundAction.Restart, reason);
    }

    /// <summary>
    /// Reports a failed local worker group. The first report of a round counts one job-wide restart; returns false when
    /// that exceeds <see cref="RendezvousSettings.MaxRestarts"/> (the job is then marked failed).
    /// </summary>
    public async Task<bool> ReportFailureAsync(RendezvousRound round, string description, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(round);
        byte[] me = Encode(NodeId);
        byte[] winner = await _store.CompareSetAsync(Key($"r{round.Round}/failed"), null, me, cancellationToken).ConfigureAwait(false);
        if (!winner.AsSpan().SequenceEqual(me))
        {
            // Another node already counted this round's failure.
            return await GetStringAsync("job_failed", cancellationToken).ConfigureAwait(false) is null;
        }
        long restarts = await _store.AddAsync(Key("restarts"), 1, cancellationToken).ConfigureAwait(false);
        StoreLog.RestartCounted(_logger, _settings.RunId, restarts, _settings.MaxRestarts);
        if (restarts > _settings.MaxRestarts)
        {
            await FailJobAsync($"{description}; the job's {_settings.MaxRestarts} restart(s) are used up", cancellationToken).ConfigureAwait(false);
            return false;
        }
        (long current, _, byte[] roundBytes) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
        if (current == round.Round)
        {
            await NextRoundAsync(round.Round, roundBytes, round.GroupWorldSize, "a worker failed", cancellationToken).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>Marks the whole job failed (every node stops); the first reason wins.</summary>
    public Task FailJobAsync(string reason, CancellationToken cancellationToken) =>
        _store.CompareSetAsync(Key("job_failed"), null, Encode(reason), cancellationToken);

    /// <summary>
    /// The exit barrier after this node's workers succeeded: waits (at most <paramref name="timeout"/>) for the other
    /// nodes of the round. Returns <see cref="RoundAction.Restart"/> when another node failed meanwhile (the round
    /// moved on), <see cref="RoundAction.Fail"/> when the job failed, else <see cref="RoundAction.Continue"/>.
    /// </summary>
    public async Task<RoundAction> ExitBarrierAsync(RendezvousRound round, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(round);
        await _store.SetAsync(Key($"r{round.Round}/finished/{NodeId}"), Encode("1"), cancellationToken).ConfigureAwait(false);
        await _store.AddAsync(Key($"r{round.Round}/done"), 1, cancellationToken).ConfigureAwait(false);
        long start = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(start) < timeout)
        {
            if (await GetCounterAsync($"r{round.Round}/done", cancellationToken).ConfigureAwait(false) >= round.GroupWorldSize)
            {
                break;
            }
            (RoundAction action, _) = await CheckAsync(round, cancellationToken).ConfigureAwait(false);
            if (action != RoundAction.Continue)
            {
                return action;
            }
            await Task.Delay(_settings.PollInterval * 5, cancellationToken).ConfigureAwait(false);
        }
        return RoundAction.Continue;
    }

    /// <summary>Counts this node out of the job (it has read what it needs from the store and will exit).</summary>
    public Task LeaveAsync(CancellationToken cancellationToken) => _store.AddAsync(Key("left"), 1, cancellationToken);

    /// <summary>
    /// For the node hosting the store: waits (bounded) until <paramref name="nodes"/> nodes, this one included, have
    /// left, so that the others can still read the outcome (success, or why the job failed) before the store goes.
    /// </summary>
    public async Task WaitForOthersToLeaveAsync(int nodes, TimeSpan timeout, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(start) < timeout
            && await GetCounterAsync("left", cancellationToken).ConfigureAwait(false) < nodes - _lostNodes.Count)
        {
            await Task.Delay(_settings.PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The job's failure reason, if it failed.</summary>
    public Task<string?> GetJobFailureAsync(CancellationToken cancellationToken) => GetStringAsync("job_failed", cancellationToken);

    private async Task<(int Count, int Restarts)?> WaitForCloseAsync(long round, int expected, byte[] roundBytes, long deadline, CancellationToken cancellationToken)
    {
        long minReachedAt = 0;
        while (true)
        {
            if (await GetStringAsync($"r{round}/closed", cancellationToken).ConfigureAwait(false) is { } closed)
            {
                return ParseClosed(closed);
            }
            (long current, _, _) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
            if (current != round)
            {
                return null;
            }
            long joined = await GetCounterAsync($"r{round}/joined", cancellationToken).ConfigureAwait(false);
            long now = Stopwatch.GetTimestamp();
            bool close = false;
            if (joined >= _settings.MaxNodes)
            {
                close = true;
            }
            else if (joined >= _settings.MinNodes)
            {
                minReachedAt = minReachedAt == 0 ? now : minReachedAt;
                close = (expected > 0 && joined >= expected) || Stopwatch.GetElapsedTime(minReachedAt, now) >= _settings.LastCallTimeout;
            }
            if (close)
            {
                int count = (int)Math.Min(joined, _settings.MaxNodes);
                long restarts = await GetCounterAsync("restarts", cancellationToken).ConfigureAwait(false);
                byte[] value = Encode(string.Create(CultureInfo.InvariantCulture, $"{count}|{restarts}"));
                byte[] result = await _store.CompareSetAsync(Key($"r{round}/closed"), null, value, cancellationToken).ConfigureAwait(false);
                if (result.AsSpan().SequenceEqual(value))
                {
                    StoreLog.Closed(_logger, _settings.RunId, NodeId, round, count);
                }
                continue;
            }
            if (now > deadline)
            {
                string message = $"rendezvous {_settings.RunId} timed out after {_settings.JoinTimeout.TotalSeconds:0.###} s: {joined} of at least {_settings.MinNodes} node(s) joined round {round}";
                throw new LaunchException(message);
            }
            await Task.Delay(_settings.PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<RendezvousRound?> CompleteAsync(long round, int index, int count, int restarts, CancellationToken cancellationToken)
    {
        var participants = new string[count];
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
        {
            string? node;
            while ((node = await GetStringAsync($"r{round}/p{i + 1}", cancellationToken).ConfigureAwait(false)) is null)
            {
                if (Stopwatch.GetElapsedTime(start) > _settings.HeartbeatTimeout)
                {
                    // A node took a ticket and vanished before writing its id.
                    await RestartAfterAsync(round, "a participant vanished during the rendezvous", cancellationToken).ConfigureAwait(false);
                    return null;
                }
                await Task.Delay(_settings.PollInterval, cancellationToken).ConfigureAwait(false);
            }
            participants[i] = node;
        }
        int groupRank = _settings.FixedGroupRank ?? index;
        string master;
        if (_settings.FixedMaster is { } fixedMaster)
        {
            master = $"{fixedMaster.Address}:{fixedMaster.Port}";
        }
        else if (groupRank == 0)
        {
            master = string.Create(CultureInfo.InvariantCulture, $"{_settings.LocalAddress}:{FreePort()}");
            await _store.SetAsync(Key($"r{round}/master"), Encode(master), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            string? published;
            start = Stopwatch.GetTimestamp();
            while ((published = await GetStringAsync($"r{round}/master", cancellationToken).ConfigureAwait(false)) is null)
            {
                RendezvousRound pending = new(round, groupRank, count, restarts, "", 0, participants);
                (RoundAction action, string? reason) = await CheckAsync(pending, cancellationToken).ConfigureAwait(false);
                if (action == RoundAction.Fail)
                {
                    throw new LaunchException(reason ?? "the job failed");
                }
                if (action == RoundAction.Restart)
                {
                    return null;
                }
                if (Stopwatch.GetElapsedTime(start) > _settings.HeartbeatTimeout * 2)
                {
                    await RestartAfterAsync(round, "group rank 0 published no MASTER_PORT", cancellationToken).ConfigureAwait(false);
                    return null;
                }
                await Task.Delay(_settings.PollInterval, cancellationToken).ConfigureAwait(false);
            }
            master = published;
        }
        int colon = master.LastIndexOf(':');
        return new RendezvousRound(round, groupRank, count, restarts, master[..colon], int.Parse(master.AsSpan(colon + 1), CultureInfo.InvariantCulture), participants);
    }

    private async Task RestartAfterAsync(long round, string reason, CancellationToken cancellationToken)
    {
        (long current, _, byte[] roundBytes) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
        if (current == round)
        {
            await NextRoundAsync(round, roundBytes, 0, reason, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task WaitForNextRoundAsync(long round, int closedCount, bool announce, long deadline, CancellationToken cancellationToken)
    {
        if (announce)
        {
            if (closedCount < _settings.MaxNodes)
            {
                await _store.AddAsync(Key($"r{round}/waiting"), 1, cancellationToken).ConfigureAwait(false);
            }
            StoreLog.Waiting(_logger, _settings.RunId, round, NodeId);
        }
        while (true)
        {
            (long current, _, _) = await ReadRoundAsync(cancellationToken).ConfigureAwait(false);
            if (current != round)
            {
                return;
            }
            await ThrowIfJobFailedAsync(cancellationToken).ConfigureAwait(false);
            if (Stopwatch.GetTimestamp() > deadline)
            {
                throw new LaunchException($"rendezvous {_settings.RunId}: round {round} stayed closed for {_settings.JoinTimeout.TotalSeconds:0.###} s (join_timeout) and admitted no new node");
            }
            await Task.Delay(_settings.PollInterval * 5, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task NextRoundAsync(long round, byte[] roundBytes, int expected, string reason, CancellationToken cancellationToken)
    {
        byte[] next = Encode(string.Create(CultureInfo.InvariantCulture, $"{round + 1}|{expected}"));
        byte[] result = await _store.CompareSetAsync(Key("round"), roundBytes, next, cancellationToken).ConfigureAwait(false);
        if (result.AsSpan().SequenceEqual(next))
        {
            StoreLog.NextRound(_logger, _settings.RunId, round, reason, round + 1);
        }
    }

    private async Task<List<string>> FindLostNodesAsync(RendezvousRound round, CancellationToken cancellationToken)
    {
        var lost = new List<string>();
        long now = Stopwatch.GetTimestamp();
        foreach (string node in round.Participants)
        {
            if (node == NodeId)
            {
                continue;
            }
            string value = await GetStringAsync($"hb/{node}", cancellationToken).ConfigureAwait(false) ?? "";
            if (!_heartbeatsSeen.TryGetValue(node, out (string Value, long SeenAt) seen) || seen.Value != value)
            {
                _heartbeatsSeen[node] = (value, now);
                continue;
            }
            double silent = Stopwatch.GetElapsedTime(seen.SeenAt, now).TotalSeconds;
            if (silent >= _settings.HeartbeatTimeout.TotalSeconds
                && await GetStringAsync($"r{round.Round}/finished/{node}", cancellationToken).ConfigureAwait(false) is null)
            {
                // Silent, and not a node whose workers succeeded and which left after its exit barrier timed out.
                StoreLog.NodeLost(_logger, _settings.RunId, node, Math.Round(silent, 2));
                lost.Add(node);
                _lostNodes.Add(node);
            }
        }
        return lost;
    }

    private async Task ThrowIfJobFailedAsync(CancellationToken cancellationToken)
    {
        if (await GetStringAsync("job_failed", cancellationToken).ConfigureAwait(false) is { } failure)
        {
            throw new LaunchException(failure);
        }
    }

    private async Task<(long Round, int Expected, byte[] Bytes)> ReadRoundAsync(CancellationToken cancellationToken)
    {
        byte[] initial = Encode("0|0");
        byte[] bytes = await _store.GetAsync(Key("round"), cancellationToken).ConfigureAwait(false)
            ?? await _store.CompareSetAsync(Key("round"), null, initial, cancellationToken).ConfigureAwait(false);
        string text = Encoding.UTF8.GetString(bytes);
        int bar = text.IndexOf('|', StringComparison.Ordinal);
        return (long.Parse(text.AsSpan(0, bar), CultureInfo.InvariantCulture), int.Parse(text.AsSpan(bar + 1), CultureInfo.InvariantCulture), bytes);
    }

    private static (int Count, int Restarts) ParseClosed(string closed)
    {
        int bar = closed.IndexOf('|', StringComparison.Ordinal);
        return (int.Parse(closed.AsSpan(0, bar), CultureInfo.InvariantCulture), int.Parse(closed.AsSpan(bar + 1), CultureInfo.InvariantCulture));
    }

    private async Task<string?> GetStringAsync(string key, CancellationToken cancellationToken) =>
        await _store.GetAsync(Key(key), cancellationToken).ConfigureAwait(false) is { } bytes ? Encoding.UTF8.GetString(bytes) : null;

    private async Task<long> GetCounterAsync(string key, CancellationToken cancellationToken) =>
        await GetStringAsync(key, cancellationToken).ConfigureAwait(false) is { } text ? long.Parse(text, CultureInfo.InvariantCulture) : 0;

    private string Key(string name) => _prefix + name;

    private static byte[] Encode(string text) => Encoding.UTF8.GetBytes(text);

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Any, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
