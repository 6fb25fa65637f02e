using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Agent;

/// <summary>Log events of the elastic agent: 1350–1399 (store and rendezvous use 1300–1349). Next id: 1359.</summary>
internal static partial class AgentLog
{
    [LoggerMessage(EventId = 1350, EventName = "AgentStoreHosted", Level = LogLevel.Information, Message = "Agent {NodeId}: hosting the rendezvous store on {EndPoint}")]
    public static partial void StoreHosted(ILogger logger, string nodeId, System.Net.IPEndPoint endPoint);

    [LoggerMessage(EventId = 1351, EventName = "AgentWorkersStarted", Level = LogLevel.Information, Message = "Agent {NodeId}: {Count} worker(s) started (ranks {FirstRank}..{LastRank} of {WorldSize}, restart count {Restarts})")]
    public static partial void WorkersStarted(ILogger logger, string nodeId, int count, int firstRank, int lastRank, int worldSize, int restarts);

    [LoggerMessage(EventId = 1352, EventName = "AgentWorkerFailed", Level = LogLevel.Error, Message = "Agent {NodeId}: worker rank {Rank} (local rank {LocalRank}) failed: {Cause}")]
    public static partial void WorkerFailed(ILogger logger, string nodeId, int rank, int localRank, string cause);

    [LoggerMessage(EventId = 1353, EventName = "AgentRestarting", Level = LogLevel.Warning, Message = "Agent {NodeId}: restarting the worker group: {Reason}")]
    public static partial void Restarting(ILogger logger, string nodeId, string reason);

    [LoggerMessage(EventId = 1354, EventName = "AgentSucceeded", Level = LogLevel.Information, Message = "Agent {NodeId}: workers succeeded after {Restarts} restart(s)")]
    public static partial void Succeeded(ILogger logger, string nodeId, int restarts);

    [LoggerMessage(EventId = 1355, EventName = "AgentFailed", Level = LogLevel.Error, Message = "Agent {NodeId}: job failed: {Reason}")]
    public static partial void Failed(ILogger logger, string nodeId, string reason);

    [LoggerMessage(EventId = 1356, EventName = "AgentStopped", Level = LogLevel.Warning, Message = "Agent {NodeId}: stopped by a signal; workers ended")]
    public static partial void Stopped(ILogger logger, string nodeId);

    [LoggerMessage(EventId = 1357, EventName = "AgentExitBarrierTimeout", Level = LogLevel.Warning, Message = "Agent {NodeId}: exit barrier not reached by every node within {Seconds} s; exiting anyway")]
    public static partial void ExitBarrierTimeout(ILogger logger, string nodeId, double seconds);

    [LoggerMessage(EventId = 1358, EventName = "AgentStoreLost", Level = LogLevel.Error, Message = "Agent {NodeId}: the rendezvous store is unreachable: {Reason}")]
    public static partial void StoreLost(ILogger logger, string nodeId, string reason);
}
