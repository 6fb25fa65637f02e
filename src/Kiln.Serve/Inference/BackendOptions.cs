using Kiln.Runtime;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Serve.Inference;

/// <summary>How a handler opens its model files.</summary>
internal sealed record BackendOptions
{
    /// <summary>Threads inside one operator; 0 lets the runtime decide.</summary>
    public int IntraOpThreads { get; init; }

    /// <summary>model-config.yaml's <c>deviceType</c> (<c>cpu</c> or <c>gpu</c>); null picks the GPU when there is one.</summary>
    public string? DeviceType { get; init; }

    /// <summary>The CUDA device ordinal when the model runs on a GPU.</summary>
    public int DeviceId { get; init; }

    /// <summary>Logs which ONNX Runtime settings a tuning file applied.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>
    /// The ONNX Runtime session settings for <paramref name="path"/>: the server's (its intra-op threads; the CUDA
    /// provider when this build has it and model-config.yaml does not say <c>deviceType: cpu</c>), replaced by the
    /// settings of a tuning file beside the model (<c>MODEL.onnx.tuning.json</c>, written by
    /// <c>kiln optimize --autotune</c>) when there is one: threads, optimization level, execution mode and provider.
    /// A provider this build lacks is logged as a warning (event 211) and the server's choice stays; model-config.yaml's
    /// <c>deviceType: cpu</c> keeps the CPU.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: the tuning file is not valid (named).</exception>
    public (OnnxSessionOptions Options, bool OnGpu) OnnxSession(string path)
    {
        const string Cuda = "CUDAExecutionProvider", Cpu = "CPUExecutionProvider";
        IReadOnlyList<string> available = OnnxSessionFactory.AvailableProviders;
        bool onGpu = DeviceType != "cpu" && available.Contains(Cuda);
        var options = new OnnxSessionOptions { IntraOpThreads = IntraOpThreads, Provider = onGpu ? OnnxProvider.Cuda : OnnxProvider.Cpu, DeviceId = DeviceId };
        OnnxTuning? tuning;
        try
        {
            tuning = OnnxTuning.LoadBeside(path);
        }
        catch (KilnRuntimeException ex)
        {
            throw new ServeException(400, "ModelException", ex.Message, ex);
        }
        if (tuning is null)
        {
            return (options, onGpu);
        }
        string file = Path.GetFileName(path), tuningFile = Path.GetFileName(OnnxTuning.PathFor(path));
        options.OptimizationLevel = tuning.OptimizationLevel;
        options.IntraOpThreads = tuning.IntraOpThreads;
        options.InterOpThreads = tuning.InterOpThreads;
        options.ParallelExecution = tuning.ParallelExecution;
        if (tuning.ExecutionProvider is Cpu or Cuda && available.Contains(tuning.ExecutionProvider))
        {
            onGpu = tuning.ExecutionProvider == Cuda && DeviceType != "cpu";
            options.Provider = onGpu ? OnnxProvider.Cuda : OnnxProvider.Cpu;
        }
        else if (Logger.IsEnabled(LogLevel.Warning))
        {
            ServeLog.TuningProviderUnavailable(Logger, file, tuningFile, tuning.ExecutionProvider, string.Join(", ", available), onGpu ? Cuda : Cpu);
        }
        string level = OnnxTuning.LevelName(options.OptimizationLevel), measured = tuning.ToString();
        ServeLog.TuningApplied(Logger, file, tuningFile, onGpu ? Cuda : Cpu, level, options.IntraOpThreads, options.InterOpThreads, options.ParallelExecution ? "parallel" : "sequential", measured);
        return (options, onGpu);
    }

    /// <summary>
    /// Opens a model file by its extension: <c>.onnx</c> through ONNX Runtime, <c>.pt</c>/<c>.pth</c>/<c>.torchscript</c>
    /// (TorchScript archives saved by <c>torch.jit.save</c>) through TorchSharp.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c> for another kind of file or a model that does not load.</exception>
    public ModelBackend Open(string path)
    {
        string extension = Path.GetExtension(path).ToLowerInvariant();
        return extension switch
        {
            ".onnx" => new OnnxBackend(path, this),
            ".pt" or ".pth" or ".torchscript" => new TorchScriptBackend(path, this),
            _ => throw new ServeException(400, "ModelException", $"Serialized file {Path.GetFileName(path)} is neither an ONNX model (.onnx) nor a TorchScript archive (.pt); those are the two formats this server runs."),
        };
    }
}
