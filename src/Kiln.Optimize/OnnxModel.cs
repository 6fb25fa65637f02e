using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize;

/// <summary>
/// An ONNX model held as its protobuf messages: read from and written to <c>.onnx</c> files, rewritten by Kiln's passes.
/// </summary>
public sealed class OnnxModel
{
    private OnnxModel(ModelProto proto, string source)
    {
        Proto = proto;
        Source = source;
    }

    /// <summary>Where the model came from (a path, or "memory").</summary>
    public string Source { get; }

    /// <summary>The ONNX IR version the file declares.</summary>
    public long IrVersion => Proto.IrVersion;

    /// <summary>The version of the default (ai.onnx) operator set.</summary>
    public long OpsetVersion => Proto.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 0;

    /// <summary>How many nodes the main graph has.</summary>
    public int NodeCount => Proto.Graph.Node.Count;

    /// <summary>How many nodes the model has, those inside If/Loop/Scan bodies included.</summary>
    public int TotalNodeCount => Count(Proto.Graph);

    /// <summary>The protobuf model; passes rewrite it in place.</summary>
    internal ModelProto Proto { get; }

    /// <summary>
    /// Reads an <c>.onnx</c> file. Tensors stored as external data (files named relative to the model's folder) are
    /// read into the model, so that passes and in-memory sessions see every weight.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <returns>The model.</returns>
    /// <exception cref="OptimizeException">
    /// The file is missing, is not an ONNX model, or has no graph; or its external data is missing, too short, or lies
    /// outside the model's folder.
    /// </exception>
    public static OnnxModel Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OptimizeException($"{path}: cannot read it: {e.Message}", e);
        }
        OnnxModel model = FromBytes(bytes, path);
        ExternalData.Inline(model.Proto, path);
        return model;
    }

    /// <summary>Parses a serialized ModelProto.</summary>
    /// <param name="bytes">The model's bytes.</param>
    /// <param name="source">A name for messages, e.g. the file it came from.</param>
    /// <returns>The model.</returns>
    /// <exception cref="OptimizeException">The bytes are not an ONNX model.</exception>
    public static OnnxModel FromBytes(byte[] bytes, string source = "memory")
    {
        ArgumentNullException.ThrowIfNull(bytes);
        ModelProto proto;
        try
        {
            proto = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OptimizeException($"{source}: not an ONNX model (the protobuf does not parse: {e.Message})", e);
        }
        if (proto.Graph is null || proto.IrVersion <= 0)
        {
            throw new OptimizeException($"{source}: not an ONNX model (no {(proto.Graph is null ? "graph" : "IR version")})");
        }
        return new OnnxModel(proto, source);
    }

    /// <summary>The bytes its initializers hold (subgraphs' included): what decides whether it needs external data.</summary>
    public long InitializerBytes => ExternalData.InitializerBytes(Proto.Graph);

    /// <summary>Serializes the model.</summary>
    /// <returns>The bytes of its ModelProto.</returns>
    /// <exception cref="OptimizeException">The model is over protobuf's 2 GB limit (save it with external data instead).</exception>
    public byte[] ToBytes() =>
        InitializerBytes < OnnxSaveOptions.ProtobufLimit ? Proto.ToByteArray()
        : throw new OptimizeException($"{Source}: {InitializerBytes} bytes of weights do not fit one protobuf message (2 GB); save it to a file, with external data");

    /// <summary>
    /// Writes the model to <paramref name="path"/> (through temporary files, so a failed write leaves no half file).
    /// When its initializers hold more than <see cref="OnnxSaveOptions.ExternalDataThreshold"/> bytes, their data goes
    /// to one side file, <c>PATH.data</c>, which the model names relative to its own folder.
    /// </summary>
    /// <param name="path">The file to write.</param>
    /// <param name="options">When to use external data; the defaults when null.</param>
    public void Save(string path, OnnxSaveOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new OnnxSaveOptions();
        string temporary = path + ".tmp";
        if (InitializerBytes <= options.ExternalDataThreshold)
        {
            File.WriteAllBytes(temporary, Proto.ToByteArray());
            File.Move(temporary, path, overwrite: true);
            return;
        }
        string dataPath = path + ".data";
        string dataTemporary = dataPath + ".tmp";
        List<(TensorProto, ByteString)> moved = ExternalData.Externalize(Proto, dataTemporary, Path.GetFileName(dataPath), options.ExternalTensorMinimumBytes);
        try
        {
            using (FileStream stream = File.Create(temporary))
            {
                Proto.WriteTo(stream);
            }
        }
        finally
        {
            ExternalData.Restore(moved);
        }
        File.Move(dataTemporary, dataPath, overwrite: true);
        File.Move(temporary, path, overwrite: true);
    }

    private static int Count(GraphProto graph) =>
        graph.Node.Count + graph.Node.SelectMany(n => n.Attribute).SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Append(a.G)).Sum(Count);

    /// <summary>A deep copy: passes run on copies, so a rejected pass leaves the model as it was.</summary>
    /// <returns>The copy.</returns>
    public OnnxModel Clone() => new(Proto.Clone(), Source);
}
