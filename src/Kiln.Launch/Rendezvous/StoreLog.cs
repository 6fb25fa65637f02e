using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// Log events of the embedded store and the rendezvous. Kiln.Launch's agent range is 1300–1399: store 1300–1319,
/// rendezvous 1320–1349, agent 1350–1399 (<c>Agent/AgentLog.cs</c>). Next store id: 1302; next rendezvous id: 1327.
/// </summary>
internal static partial class StoreLog
{
    [LoggerMessage(EventId = 1300, EventName = "StoreServerStarted", Level = LogLevel.Information, Message = "Rendezvous store listening on {EndPoint}")]
    public static partial void ServerStarted(ILogger logger, System.Net.IPEndPoint endPoint);

    [LoggerMessage(EventId = 1301, EventName = "StoreBadHandshake", Level = LogLevel.Warning, Message = "Rendezvous store: {Remote} is not a Kiln store client; connection dropped")]
    public static partial void BadHandshake(ILogger logger, string remote);

    [LoggerMessage(EventId = 1320, EventName = "RendezvousJoined", Level = LogLevel.Debug, Message = "Rendezvous {RunId}: node {NodeId} joined round {Round} as participant {Index}")]
    public static partial void Joined(ILogger logger, string runId, string nodeId, long round, long index);

    [LoggerMessage(EventId = 1321, EventName = "RendezvousComplete", Level = LogLevel.Information, Message = "Rendezvous {RunId} round {Round} complete: group rank {GroupRank} of {GroupWorldSize}, restart count {Restarts}, master {MasterAddr}:{MasterPort}")]
    public static partial void Complete(ILogger logger, string runId, long round, int groupRank, int groupWorldSize, int restarts, string masterAddr, int masterPort);

    [LoggerMessage(EventId = 1322, EventName = "RendezvousWaiting", Level = LogLevel.Information, Message = "Rendezvous {RunId}: round {Round} is closed; node {NodeId} waits for the next round")]
    public static partial void Waiting(ILogger logger, string runId, long round, string nodeId);

    [LoggerMessage(EventId = 1323, EventName = "RendezvousRoundClosed", Level = LogLevel.Debug, Message = "Rendezvous {RunId}: node {NodeId} closed round {Round} with {Participants} participants")]
    public static partial void Closed(ILogger logger, string runId, string nodeId, long round, int participants);

    [LoggerMessage(EventId = 1324, EventName = "RendezvousNextRound", Level = LogLevel.Information, Message = "Rendezvous {RunId}: round {Round} ends ({Reason}); next round {Next}")]
    public static partial void NextRound(ILogger logger, string runId, long round, string reason, long next);

    [LoggerMessage(EventId = 1325, EventName = "RendezvousNodeLost", Level = LogLevel.Warning, Message = "Rendezvous {RunId}: node {NodeId} sent no heartbeat for {Seconds} s; it is considered gone")]
    public static partial void NodeLost(ILogger logger, string runId, string nodeId, double seconds);

    [LoggerMessage(EventId = 1326, EventName = "RendezvousRestartCounted", Level = LogLevel.Warning, Message = "Rendezvous {RunId}: restart {Restarts} of at most {MaxRestarts} for the job")]
    public static partial void RestartCounted(ILogger logger, string runId, long restarts, int maxRestarts);
}
