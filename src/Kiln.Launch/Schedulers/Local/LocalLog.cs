using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>The local scheduler's log messages. Event ids 1500–1599 belong to the local scheduler; the next free id is 1512.</summary>
internal static partial class LocalLog
{
    [LoggerMessage(EventId = 1500, EventName = "LocalAppSubmitted", Level = LogLevel.Information, Message = "Local app {AppId} submitted ({Replicas} replicas); state in {Directory}")]
    public static partial void AppSubmitted(ILogger logger, string appId, int replicas, string directory);

    [LoggerMessage(EventId = 1501, EventName = "LocalSupervisorStarted", Level = LogLevel.Information, Message = "Supervisor of {AppId} runs as pid {Pid}")]
    public static partial void SupervisorStarted(ILogger logger, string appId, int pid);

    [LoggerMessage(EventId = 1502, EventName = "LocalReplicaStarted", Level = LogLevel.Information, Message = "{AppId}: {Role}[{Replica}] started as pid {Pid}")]
    public static partial void ReplicaStarted(ILogger logger, string appId, string role, int replica, int pid);

    [LoggerMessage(EventId = 1503, EventName = "LocalReplicaStartFailed", Level = LogLevel.Error, Message = "{AppId}: {Role}[{Replica}] could not start: {Reason}")]
    public static partial void ReplicaStartFailed(ILogger logger, string appId, string role, int replica, string reason);

    [LoggerMessage(EventId = 1504, EventName = "LocalReplicaExited", Level = LogLevel.Information, Message = "{AppId}: {Role}[{Replica}] exited with code {ExitCode}")]
    public static partial void ReplicaExited(ILogger logger, string appId, string role, int replica, int exitCode);

    [LoggerMessage(EventId = 1505, EventName = "LocalAppRestarting", Level = LogLevel.Warning, Message = "{AppId}: restart {Restart} ({Policy} policy) after {Role}[{Replica}] failed")]
    public static partial void AppRestarting(ILogger logger, string appId, int restart, string policy, string role, int replica);

    [LoggerMessage(EventId = 1506, EventName = "LocalAppEnded", Level = LogLevel.Information, Message = "{AppId} ended {State}: {Message}")]
    public static partial void AppEnded(ILogger logger, string appId, string state, string message);

    [LoggerMessage(EventId = 1507, EventName = "LocalCancelRequested", Level = LogLevel.Information, Message = "{AppId}: cancel requested; stopping replicas (SIGTERM, SIGKILL after {GraceSeconds} s)")]
    public static partial void CancelRequested(ILogger logger, string appId, double graceSeconds);

    [LoggerMessage(EventId = 1508, EventName = "LocalReplicaKilled", Level = LogLevel.Warning, Message = "{AppId}: {Role}[{Replica}] (pid {Pid}) outlived the grace period; sent SIGKILL")]
    public static partial void ReplicaKilled(ILogger logger, string appId, string role, int replica, int pid);

    [LoggerMessage(EventId = 1509, EventName = "LocalSupervisorGone", Level = LogLevel.Warning, Message = "{AppId}: the supervisor is gone without recording an end; cancelling its replicas directly")]
    public static partial void SupervisorGone(ILogger logger, string appId);

    [LoggerMessage(EventId = 1510, EventName = "LocalLogPumpFailed", Level = LogLevel.Warning, Message = "{AppId}: {Role}[{Replica}] output could not be recorded: {Reason}")]
    public static partial void LogPumpFailed(ILogger logger, string appId, string role, int replica, string reason);

    [LoggerMessage(EventId = 1511, EventName = "LocalSupervisorFailed", Level = LogLevel.Error, Message = "{AppId}: the supervisor failed")]
    public static partial void SupervisorFailed(ILogger logger, Exception exception, string appId);
}
