using Microsoft.ML.OnnxRuntime;

namespace Kiln.Runtime;

/// <summary>The execution providers Kiln opens ONNX Runtime sessions on.</summary>
public enum OnnxProvider
{
    /// <summary>ONNX Runtime's own CPU kernels.</summary>
    Cpu,

    /// <summary>NVIDIA GPUs through CUDA (needs the ONNX Runtime GPU package on the host).</summary>
    Cuda,
}

/// <summary>How <see cref="OnnxSessionFactory"/> opens a session.</summary>
public sealed class OnnxSessionOptions
{
    /// <summary>The provider to run on. Default: <see cref="OnnxProvider.Cpu"/>.</summary>
    public OnnxProvider Provider { get; set; } = OnnxProvider.Cpu;

    /// <summary>The CUDA device ordinal when <see cref="Provider"/> is CUDA. Default: 0.</summary>
    public int DeviceId { get; set; }

    /// <summary>Threads inside one operator; 0 lets ONNX Runtime use one per physical core. Default: 0.</summary>
    public int IntraOpThreads { get; set; }

    /// <summary>Threads running independent operators in parallel; 0 means ONNX Runtime's default. Default: 0.</summary>
    public int InterOpThreads { get; set; }

    /// <summary>Run independent operators in parallel (needs <see cref="InterOpThreads"/>). Default: false (sequential).</summary>
    public bool ParallelExecution { get; set; }

    /// <summary>Graph rewrites applied when the session opens. Default: all.</summary>
    public GraphOptimizationLevel OptimizationLevel { get; set; } = GraphOptimizationLevel.ORT_ENABLE_ALL;

    /// <summary>Fall back to the CPU when the requested provider is not in this ONNX Runtime build. Default: false.</summary>
    public bool FallBackToCpu { get; set; }
}
