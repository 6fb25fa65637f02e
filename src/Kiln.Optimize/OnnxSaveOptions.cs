namespace Kiln.Optimize;

/// <summary>How <see cref="OnnxModel.Save"/> writes a model: inline, or with its weights in a side file (external data).</summary>
public sealed class OnnxSaveOptions
{
    /// <summary>Protobuf's limit on one message (2 GiB − 1), less room for the graph itself.</summary>
    internal const long ProtobufLimit = int.MaxValue - (64L << 20);

    /// <summary>
    /// Initializers holding more bytes than this in all are written as external data, into one file beside the model
    /// (<c>MODEL.onnx.data</c>).
    /// </summary>
    /// <value>Just under protobuf's 2 GB limit on one message.</value>
    public long ExternalDataThreshold { get; init; } = ProtobufLimit;

    /// <summary>With external data, initializers smaller than this stay in the model file.</summary>
    /// <value>1024 bytes.</value>
    public long ExternalTensorMinimumBytes { get; init; } = 1024;
}
