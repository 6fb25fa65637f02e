namespace Kiln.Serve.Inference;

/// <summary>The frontend settings of one model version (TorchServe's model-config.yaml keys and POST /models parameters).</summary>
internal sealed record ModelSettings
{
    public int BatchSize { get; init; } = 1;

    public int MaxBatchDelayMs { get; init; } = 100;

    public int MinWorkers { get; init; }

    public int MaxWorkers { get; init; }

    public int JobQueueSize { get; init; } = 100;

    public int ResponseTimeoutSeconds { get; init; } = 120;

    /// <summary>Threads inside one ONNX Runtime operator, per session; 0 lets ONNX Runtime decide.</summary>
    public int IntraOpThreads { get; init; }
}
