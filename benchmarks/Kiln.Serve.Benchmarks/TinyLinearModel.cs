using System.Text;

namespace Kiln.Serve.Benchmarks;

/// <summary>
/// The tiny model: an ONNX graph written field by field in protobuf's wire format, <c>Y[N,3] = MatMul(X[N,4], W[4,3]) + B[3]</c>
/// with a symbolic batch dimension N. Running it costs a few microseconds, so what a request costs on top is the server.
/// </summary>
internal static class TinyLinearModel
{
    public const int Inputs = 4;
    public const int Outputs = 3;

    /// <summary>The weights, row-major [Inputs, Outputs].</summary>
    public static float[] Weights { get; } = [.. Enumerable.Range(0, Inputs * Outputs).Select(i => (i - 6) / 8f)];

    public static float[] Bias { get; } = [0.25f, -1f, 1.5f];

    /// <summary>The serialized ModelProto (IR version 8, default-domain opset 13).</summary>
    public static byte[] Build()
    {
        var graph = new ProtoWriter()
            .Message(1, Node("MatMul", "X", "W", "XW"))                 // GraphProto.node
            .Message(1, Node("Add", "XW", "B", "Y"))
            .String(2, "tiny_linear")                                  // GraphProto.name
            .Message(5, Initializer("W", [Inputs, Outputs], Weights))  // GraphProto.initializer
            .Message(5, Initializer("B", [Outputs], Bias))
            .Message(11, Value("X", Inputs))                           // GraphProto.input
            .Message(12, Value("Y", Outputs));                         // GraphProto.output
        return new ProtoWriter()
            .Varint(1, 8)                                                              // ModelProto.ir_version
            .Message(8, new ProtoWriter().String(1, "").Varint(2, 13))                 // ModelProto.opset_import
            .String(2, "kiln-serve-benchmarks")                                        // ModelProto.producer_name
            .Message(7, graph)                                                         // ModelProto.graph
            .ToArray();
    }

    /// <summary>Y for X, computed here, to check what the server answers.</summary>
    public static float[] Expected(ReadOnlySpan<float> x)
    {
        int rows = x.Length / Inputs;
        float[] y = new float[rows * Outputs];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < Outputs; o++)
            {
                float sum = Bias[o];
                for (int i = 0; i < Inputs; i++)
                {
                    sum += x[(r * Inputs) + i] * Weights[(i * Outputs) + o];
                }
                y[(r * Outputs) + o] = sum;
            }
        }
        return y;
    }

    // NodeProto: input = 1 (repeated), output = 2, op_type = 4.
    private static ProtoWriter Node(string op, string a, string b, string output) =>
        new ProtoWriter().String(1, a).String(1, b).String(2, output).String(4, op);

    // TensorProto: dims = 1 (repeated), data_type = 2 (1 = FLOAT), raw_data = 9, name = 8.
    private static ProtoWriter Initializer(string name, long[] dims, float[] values)
    {
        var tensor = new ProtoWriter();
        foreach (long d in dims)
        {
            tensor.Varint(1, (ulong)d);
        }
        byte[] raw = new byte[values.Length * sizeof(float)];
        Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
        return tensor.Varint(2, 1).String(8, name).Bytes(9, raw);
    }

    // ValueInfoProto{name = 1, type = 2: TypeProto{tensor_type = 1: Tensor{elem_type = 1, shape = 2: TensorShapeProto{dim = 1 (repeated): Dimension{dim_value = 1 | dim_param = 2}}}}}.
    private static ProtoWriter Value(string name, int columns)
    {
        var shape = new ProtoWriter()
            .Message(1, new ProtoWriter().String(2, "N"))
            .Message(1, new ProtoWriter().Varint(1, (ulong)columns));
        var tensorType = new ProtoWriter().Varint(1, 1).Message(2, shape);
        return new ProtoWriter().String(1, name).Message(2, new ProtoWriter().Message(1, tensorType));
    }

    /// <summary>Appends protobuf fields: varints (wire type 0) and length-delimited bytes (wire type 2).</summary>
    private sealed class ProtoWriter
    {
        private readonly List<byte> _bytes = [];

        public ProtoWriter Varint(int field, ulong value)
        {
            Raw((ulong)field << 3);
            Raw(value);
            return this;
        }

        public ProtoWriter Bytes(int field, ReadOnlySpan<byte> payload)
        {
            Raw(((ulong)field << 3) | 2);
            Raw((ulong)payload.Length);
            _bytes.AddRange(payload);
            return this;
        }

        public ProtoWriter String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public ProtoWriter Message(int field, ProtoWriter message) => Bytes(field, message.ToArray());

        public byte[] ToArray() => [.. _bytes];

        private void Raw(ulong value)
        {
            while (value >= 0x80)
            {
                _bytes.Add((byte)(value | 0x80));
                value >>= 7;
            }
            _bytes.Add((byte)value);
        }
    }
}
