using Microsoft.ML.OnnxRuntime;

namespace Kiln.Runtime;

/// <summary>
/// The one place that opens ONNX Runtime sessions: provider choice, thread settings and clear errors
/// for a missing file or provider.
/// </summary>
public static class OnnxSessionFactory
{
    private const string CudaProviderName = "CUDAExecutionProvider";

    /// <summary>ONNX Runtime's version, e.g. "1.31.1".</summary>
    public static string Version => OrtEnv.Instance().GetVersionString();

    /// <summary>The execution providers this ONNX Runtime build offers, e.g. "CPUExecutionProvider".</summary>
    public static IReadOnlyList<string> AvailableProviders => OrtEnv.Instance().GetAvailableProviders();

    /// <summary>Opens a session on the model file.</summary>
    /// <remarks>The caller owns the returned session and must dispose it.</remarks>
    /// <exception cref="FileNotFoundException">The model file does not exist.</exception>
    /// <exception cref="KilnRuntimeException">The provider is not available, or ONNX Runtime rejects the model (the message names the file).</exception>
    public static InferenceSession Open(string modelPath, OnnxSessionOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        if (!File.Exists(modelPath))
        {
            throw new FileNotFoundException($"ONNX model {modelPath} does not exist.", modelPath);
        }
        using SessionOptions sessionOptions = Build(options ?? new OnnxSessionOptions());
        try
        {
            return new InferenceSession(modelPath, sessionOptions);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new KilnRuntimeException($"ONNX Runtime cannot open {modelPath}: {ex.Message}", ex);
        }
    }

    /// <summary>Opens a session on a model held in memory.</summary>
    /// <remarks>The caller owns the returned session and must dispose it.</remarks>
    /// <exception cref="KilnRuntimeException">The provider is not available, or ONNX Runtime rejects the model.</exception>
    public static InferenceSession Open(byte[] model, OnnxSessionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using SessionOptions sessionOptions = Build(options ?? new OnnxSessionOptions());
        try
        {
            return new InferenceSession(model, sessionOptions);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new KilnRuntimeException($"ONNX Runtime cannot open the model ({model.Length} bytes): {ex.Message}", ex);
        }
    }

    private static SessionOptions Build(OnnxSessionOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(options.IntraOpThreads);
        ArgumentOutOfRangeException.ThrowIfNegative(options.InterOpThreads);
        var session = new SessionOptions
        {
            GraphOptimizationLevel = options.OptimizationLevel,
            IntraOpNumThreads = options.IntraOpThreads,
            InterOpNumThreads = options.InterOpThreads,
            ExecutionMode = options.ParallelExecution ? ExecutionMode.ORT_PARALLEL : ExecutionMode.ORT_SEQUENTIAL,
        };
        try
        {
            if (options.Provider == OnnxProvider.Cuda)
            {
                if (AvailableProviders.Contains(CudaProviderName))
                {
                    session.AppendExecutionProvider_CUDA(options.DeviceId);
                }
                else if (!options.FallBackToCpu)
                {
                    throw new KilnRuntimeException(
                        $"ONNX Runtime {Version} has no {CudaProviderName} (it offers {string.Join(", ", AvailableProviders)}); " +
                        "install the Microsoft.ML.OnnxRuntime.Gpu build or allow the CPU fallback.");
                }
            }
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }
}
