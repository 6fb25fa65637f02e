using System.Text;

namespace Kiln.Serve.Tests;

/// <summary>
/// A small ONNX graph builder writing the protobuf wire format by hand (opset 13): nodes with attributes, float32 and
/// int64 initialisers, inputs and outputs with fixed or symbolic dimensions. Used for the vision handlers' tiny models.
/// </summary>
internal sealed class VisionOnnx
{
    private const int Float = 1;
    private const int Int64 = 7;

    private readonly List<byte[]> _nodes = [];
    private readonly List<byte[]> _initializers = [];
    private readonly List<byte[]> _inputs = [];
    private readonly List<byte[]> _outputs = [];

    /// <summary>Adds a node; attributes are (name, value) with value an int, long, float, int[] or long[].</summary>
    public VisionOnnx Node(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attributes)
    {
        _nodes.Add(Concat(
            [.. inputs.Select(i => String(1, i)), .. outputs.Select(o => String(2, o)), String(4, op), .. attributes.Select(a => Bytes(5, Attribute(a.Name, a.Value)))]));
        return this;
    }

    public VisionOnnx FloatInit(string name, long[] dims, float[] values)
    {
        byte[] raw = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        _initializers.Add(Tensor(name, dims, Float, raw));
        return this;
    }

    public VisionOnnx Int64Init(string name, long[] dims, long[] values)
    {
        byte[] raw = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        _initializers.Add(Tensor(name, dims, Int64, raw));
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
        _outputs.Add(ValueInfo(name, Int64, dims));
        return this;
    }

    public byte[] Build()
    {
        byte[] graph = Concat(
            [.. _nodes.Select(n => Bytes(1, n)), String(2, "vision"), .. _initializers.Select(t => Bytes(5, t)), .. _inputs.Select(i => Bytes(11, i)), .. _outputs.Select(o => Bytes(12, o))]);
        return Concat(
            Varint(1, 8),                                   // ir_version
            Bytes(8, Concat(String(1, ""), Varint(2, 13))),  // opset_import: default domain, opset 13
            Bytes(7, graph));
    }

    private static byte[] Attribute(string name, object value) => value switch
    {
        int i => Concat(String(1, name), Varint(3, (ulong)(long)i), Varint(20, 2)),
        long l => Concat(String(1, name), Varint(3, (ulong)l), Varint(20, 2)),
        float f => Concat(String(1, name), Key(2, 5), BitConverter.GetBytes(f), Varint(20, 1)),
        int[] ints => Concat([String(1, name), .. ints.Select(v => Varint(8, (ulong)(long)v)), Varint(20, 7)]),
        long[] longs => Concat([String(1, name), .. longs.Select(v => Varint(8, (ulong)v)), Varint(20, 7)]),
        _ => throw new ArgumentException($"Attribute type {value.GetType()} is not supported.", nameof(value)),
    };

    private static byte[] Tensor(string name, long[] dims, int dataType, byte[] raw) =>
        Concat([.. dims.Select(d => Varint(1, (ulong)d)), Varint(2, (ulong)dataType), String(8, name), Bytes(9, raw)]);

    private static byte[] ValueInfo(string name, int elementType, object[] dims)
    {
        byte[] shape = Concat([.. dims.Select(d => Bytes(1, d is string symbol ? String(2, symbol) : Varint(1, (ulong)Convert.ToInt64(d, System.Globalization.CultureInfo.InvariantCulture))))]);
        byte[] tensorType = Concat(Varint(1, (ulong)elementType), Bytes(2, shape));
        return Concat(String(1, name), Bytes(2, Bytes(1, tensorType)));
    }

    private static byte[] String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    private static byte[] Bytes(int field, byte[] payload) => Concat(Key(field, 2), RawVarint((ulong)payload.Length), payload);

    private static byte[] Varint(int field, ulong value) => Concat(Key(field, 0), RawVarint(value));

    private static byte[] Key(int field, int wireType) => RawVarint((ulong)((field << 3) | wireType));

    private static byte[] RawVarint(ulong value)
    {
        var bytes = new List<byte>();
        do
        {
            byte b = (byte)(value & 0x7F);
            value >>= 7;
            bytes.Add(value != 0 ? (byte)(b | 0x80) : b);
        }
        while (value != 0);
        return [.. bytes];
    }

    private static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];
}
