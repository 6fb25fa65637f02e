using Microsoft.Extensions.Logging;

namespace Kiln.Serve;

/// <summary>Kiln.Serve's log messages; event ids are stable (1xx lifecycle, 2xx models, 3xx workers, 4xx requests).</summary>
internal static partial class ServeLog
{
    [LoggerMessage(EventId = 100, Level = LogLevel.Information, Message = "Kiln.Serve listening: inference {InferenceAddress}, management {ManagementAddress}")]
    public static partial void Listening(ILogger logger, Uri inferenceAddress, Uri managementAddress);

    [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Kiln.Serve stopping: draining {Models} model versions")]
    public static partial void Stopping(ILogger logger, int models);

    [LoggerMessage(EventId = 200, Level = LogLevel.Information, Message = "Model {Model} version {Version} registered from {Url} (handler {Handler}, batch size {BatchSize}, max batch delay {MaxBatchDelay} ms, {Workers} workers)")]
    public static partial void ModelRegistered(ILogger logger, string model, string version, string url, string handler, int batchSize, int maxBatchDelay, int workers);

    [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "Model {Model} version {Version} unregistered after draining {Drained} queued requests")]
    public static partial void ModelUnregistered(ILogger logger, string model, string version, int drained);

    [LoggerMessage(EventId = 202, Level = LogLevel.Information, Message = "Model {Model} default version is now {Version}")]
    public static partial void DefaultVersionSet(ILogger logger, string model, string version);

    [LoggerMessage(EventId = 210, Level = LogLevel.Information, Message = "Model file {File}: ONNX Runtime settings from {TuningFile}: {Provider}, optimization {Level}, {IntraOpThreads} intra-op / {InterOpThreads} inter-op thread(s), {Mode} (tuned: {Tuned})")]
    public static partial void TuningApplied(ILogger logger, string file, string tuningFile, string provider, string level, int intraOpThreads, int interOpThreads, string mode, string tuned);

    [LoggerMessage(EventId = 211, Level = LogLevel.Warning, Message = "Model file {File}: {TuningFile} asks for {Provider}, which this ONNX Runtime build does not offer ({Available}); using {Fallback}")]
    public static partial void TuningProviderUnavailable(ILogger logger, string file, string tuningFile, string provider, string available, string fallback);

    [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Model {Model} version {Version} scaled from {From} to {To} workers")]
    public static partial void WorkersScaled(ILogger logger, string model, string version, int from, int to);

    [LoggerMessage(EventId = 301, Level = LogLevel.Error, Message = "Worker {Worker} failed a batch of {Count} requests")]
    public static partial void BatchFailed(ILogger logger, Exception exception, string worker, int count);

    [LoggerMessage(EventId = 302, Level = LogLevel.Error, Message = "Scaling model {Model} failed")]
    public static partial void ScaleFailed(ILogger logger, Exception exception, string model);

    [LoggerMessage(EventId = 400, Level = LogLevel.Warning, Message = "Model {Model} version {Version}: queue full ({Capacity}), request refused with 503")]
    public static partial void QueueFull(ILogger logger, string model, string version, int capacity);

    [LoggerMessage(EventId = 401, Level = LogLevel.Warning, Message = "Model {Model} version {Version}: no response within {Timeout} s")]
    public static partial void ResponseTimeout(ILogger logger, string model, string version, int timeout);

    /// <summary>The access log (category <c>Kiln.Serve.Access</c>, TorchServe's ACCESS_LOG): one line per HTTP request.</summary>
    [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "{Remote} \"{Method} {Path}\" {Status} {ElapsedMs:0.###} ms")]
    public static partial void Access(ILogger logger, string remote, string method, string path, int status, double elapsedMs);

    [LoggerMessage(EventId = 402, Level = LogLevel.Debug, Message = "{Method} {Path} -> {Status} ({Type}: {Message})")]
    public static partial void RequestFailed(ILogger logger, string method, string path, int status, string type, string message);
}
