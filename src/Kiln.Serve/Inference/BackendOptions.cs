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
