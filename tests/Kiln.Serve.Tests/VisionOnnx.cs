using static Kiln.Serve.Tests.OnnxWire;

namespace Kiln.Serve.Tests;

/// <summary>
/// A small ONNX graph builder writing the protobuf wire format by hand (opset 13): nodes with attributes, float32 and
/// int64 initialisers, inputs and outputs with fixed or symbolic dimensions. Used for the vision handlers' tiny models.
/// </summary>
internal sealed class VisionOnnx
{
    private readonly List<byte[]> _nodes = [];
    private readonly List<byte[]> _initializers = [];
    private readonly List<byte[]> _inputs = [];
    private readonly List<byte[]> _outputs = [];

    /// <summary>Adds a node; attributes are (name, value) with value an int, long, float, int[] or long[].</summary>
    public VisionOnnx Node(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        _nodes.Add(OnnxWire.Node(op, inputs, outputs, [.. attributes.Select(a => OnnxWire.Attribute(a.Name, a.Value))]));
        return this;
    }

    public VisionOnnx FloatInit(string name, long[] dims, float[] values)
    {
        _initializers.Add(FloatTensor(name, dims, values));
        return this;
    }

    public VisionOnnx Int64Init(string name, long[] dims, long[] values)
    {
        _initializers.Add(Int64Tensor(name, dims, values));
        return this;
    }

    /// <summary>A float32 graph input; a string dimension is symbolic.</summary>
    public VisionOnnx Input(string name, params object[] dims)
    {
        _inputs.Add(ValueInfo(name, Float, dims));
        return this;
    }

    public VisionOnnx Output(string name, params object[] dims)
    {
        _outputs.Add(ValueInfo(name, Float, dims));
        return this;
    }

    public VisionOnnx Int64Output(string name, params object[] dims)
    {
        _outputs.Add(ValueInfo(name, OnnxWire.Int64, dims));
        return this;
    }

    public byte[] Build() => Model("vision", _nodes, _initializers, _inputs, _outputs);
}
