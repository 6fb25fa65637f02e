using System.Globalization;
using System.Text;

namespace Kiln.Serve.Tests;

/// <summary>
/// The protobuf wire format of ONNX, written by hand for the tests' tiny models (<see cref="TinyOnnx"/>,
/// <see cref="TextOnnx"/>, <see cref="VisionOnnx"/>): ModelProto (ir_version 8, opset 13), GraphProto, NodeProto,
/// AttributeProto, TensorProto (raw_data) and ValueInfoProto.
/// </summary>
internal static class OnnxWire
{
    /// <summary>TensorProto.DataType FLOAT.</summary>
    public const int Float = 1;

    /// <summary>TensorProto.DataType INT64.</summary>
    public const int Int64 = 7;

    /// <summary>A ModelProto: ir_version 8, the default domain at opset 13, and a graph of these parts.</summary>
    public static byte[] Model(string name, IEnumerable<byte[]> nodes, IEnumerable<byte[]> initializers, IEnumerable<byte[]> inputs, IEnumerable<byte[]> outputs)
    {
        byte[] graph = Concat(
            [.. nodes.Select(n => Bytes(1, n)), String(2, name), .. initializers.Select(t => Bytes(5, t)), .. inputs.Select(i => Bytes(11, i)), .. outputs.Select(o => Bytes(12, o))]);
        return Concat(
            Varint(1, 8),                                   // ir_version
            Bytes(8, Concat(String(1, ""), Varint(2, 13))),  // opset_import: default domain, opset 13
            Bytes(7, graph));
    }

    /// <summary>A NodeProto: input (1), output (2), op_type (4), attribute (5).</summary>
    public static byte[] Node(string op, string[] inputs, string[] outputs, params byte[][] attributes) =>
        Concat([.. inputs.Select(i => String(1, i)), .. outputs.Select(o => String(2, o)), String(4, op), .. attributes.Select(a => Bytes(5, a))]);

    /// <summary>An AttributeProto; the value is an int, long, float, int[] or long[].</summary>
    public static byte[] Attribute(string name, object value) => value switch
    {
        int i => Concat(String(1, name), Varint(3, (ulong)(long)i), Varint(20, 2)),
        long l => Concat(String(1, name), Varint(3, (ulong)l), Varint(20, 2)),
        float f => Concat(String(1, name), Key(2, 5), BitConverter.GetBytes(f), Varint(20, 1)),
        int[] ints => Concat([String(1, name), .. ints.Select(v => Varint(8, (ulong)(long)v)), Varint(20, 7)]),
        long[] longs => Concat([String(1, name), .. longs.Select(v => Varint(8, (ulong)v)), Varint(20, 7)]),
        _ => throw new ArgumentException($"Attribute type {value.GetType()} is not supported.", nameof(value)),
    };

    /// <summary>A float32 TensorProto.</summary>
    public static byte[] FloatTensor(string name, long[] dims, float[] values)
    {
        byte[] raw = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        return Tensor(name, dims, Float, raw);
    }

    /// <summary>An int64 TensorProto.</summary>
    public static byte[] Int64Tensor(string name, long[] dims, long[] values)
    {
        byte[] raw = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        return Tensor(name, dims, Int64, raw);
    }

    /// <summary>A TensorProto with raw_data: dims (1), data_type (2), name (8), raw_data (9).</summary>
    public static byte[] Tensor(string name, long[] dims, int dataType, byte[] raw) =>
        Concat([.. dims.Select(d => Varint(1, (ulong)d)), Varint(2, (ulong)dataType), String(8, name), Bytes(9, raw)]);

    /// <summary>A ValueInfoProto: name, TypeProto.tensor_type { elem_type, shape { dim } }; a string dimension is symbolic.</summary>
    public static byte[] ValueInfo(string name, int elementType, object[] dims)
    {
        byte[] shape = Concat([.. dims.Select(d => Bytes(1, d is string symbol ? String(2, symbol) : Varint(1, (ulong)Convert.ToInt64(d, CultureInfo.InvariantCulture))))]);
        byte[] tensorType = Concat(Varint(1, (ulong)elementType), Bytes(2, shape));
        return Concat(String(1, name), Bytes(2, Bytes(1, tensorType)));
    }

    public static byte[] String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    public static byte[] Bytes(int field, byte[] payload) => Concat(Key(field, 2), RawVarint((ulong)payload.Length), payload);

    public static byte[] Varint(int field, ulong value) => Concat(Key(field, 0), RawVarint(value));

    public static byte[] Key(int field, int wireType) => RawVarint((ulong)((field << 3) | wireType));

    public static byte[] RawVarint(ulong value)
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

    public static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];
}
