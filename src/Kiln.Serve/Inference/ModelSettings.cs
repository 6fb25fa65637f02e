namespace Kiln.Serve.Inference;

/// <summary>The frontend settings of one model version (TorchServe's model-config.yaml keys and POST /models parameters).</summary>
internal sealed record ModelSettings
{
    public int BatchSize { get; init; } = 1;

    public int MaxBatchDelayMs { get; init; } = 100;

    public int MinWorkers { get; init; }

    public int MaxWorkers { get; init; }

    public int JobQueueSize { get; init; } = 100;

    /// <summary>
    /// Triton's <c>preferred_batch_size</c>: once a batch reaches one of these sizes and no further request is already
    /// waiting, it runs at once instead of waiting out the delay. Empty: only <see cref="BatchSize"/> ends the wait early.
    /// </summary>
    public IReadOnlyList<int> PreferredBatchSizes { get; init; } = [];

    /// <summary>
    /// Triton's <c>max_queue_delay_microseconds</c>: a batch waits for more requests only while its oldest request has
    /// waited less than this, counted from when it was queued. Null: TorchServe's rule, <see cref="MaxBatchDelayMs"/> from
    /// when the worker took the first request.
    /// </summary>
    public int? MaxQueueDelayMicroseconds { get; init; }

    public int ResponseTimeoutSeconds { get; init; } = 120;

    /// <summary>The server's max_response_size: a larger response fails its request with 413.</summary>
    public long MaxResponseSize { get; init; } = 6_553_500;

    /// <summary>Threads inside one ONNX Runtime operator, per session; 0 lets ONNX Runtime decide.</summary>
    public int IntraOpThreads { get; init; }
}
