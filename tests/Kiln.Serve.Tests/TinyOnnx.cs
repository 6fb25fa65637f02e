namespace Kiln.Serve.Tests;

/// <summary>
/// Writes a tiny ONNX model by hand (protobuf wire format): Y[N,3] = MatMul(X[N,4], W[4,3]) + B[3], with a dynamic batch
/// dimension N, so batching can be checked against the same arithmetic done here.
/// </summary>
internal static class TinyOnnx
{
    public const int Inputs = 4;
    public const int Outputs = 3;

    public static float[] Weights(float scale) => [.. Enumerable.Range(0, Inputs * Outputs).Select(i => scale * (i - 5) / 7f)];

    public static float[] Bias(float scale) => [scale * 0.5f, -scale, 2f];

    public static float[] Expected(float[] x, float scale)
    {
        float[] w = Weights(scale), b = Bias(scale);
        int rows = x.Length / Inputs;
        float[] y = new float[rows * Outputs];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < Outputs; o++)
            {
                float sum = 0;
                for (int i = 0; i < Inputs; i++)
                {
                    sum += x[(r * Inputs) + i] * w[(i * Outputs) + o];
                }
                y[(r * Outputs) + o] = sum + b[o];
            }
        }
        return y;
    }

    public static byte[] Linear(float scale)
    {
        byte[] graph = Concat(
            Bytes(1, Node("MatMul", ["X", "W"], "XW")),
            Bytes(1, Node("Add", ["XW", "B"], "Y")),
            String(2, "linear"),
            Bytes(5, Tensor("W", [Inputs, Outputs], Weights(scale))),
            Bytes(5, Tensor("B", [Outputs], Bias(scale))),
            Bytes(11, ValueInfo("X", [null, Inputs])),
            Bytes(12, ValueInfo("Y", [null, Outputs])));
        return Concat(
            Varint(1, 8),                                   // ir_version
            Bytes(8, Concat(String(1, ""), Varint(2, 13))),  // opset_import: default domain, opset 13
            Bytes(7, graph));
    }

    private static byte[] Node(string op, string[] inputs, string output) =>
        Concat([.. inputs.Select(i => String(1, i)), String(2, output), String(4, op)]);

    private static byte[] Tensor(string name, long[] dims, float[] values)
    {
        byte[] data = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, data, 0, data.Length);
        return Concat([.. dims.Select(d => Varint(1, (ulong)d)), Varint(2, 1), Bytes(4, data), String(8, name)]);
    }

    private static byte[] ValueInfo(string name, long?[] dims)
    {
        byte[] shape = Concat([.. dims.Select(d => Bytes(1, d is { } v ? Varint(1, (ulong)v) : String(2, "N")))]);
        byte[] tensorType = Concat(Varint(1, 1), Bytes(2, shape));
        return Concat(String(1, name), Bytes(2, Bytes(1, tensorType)));
    }

    private static byte[] String(int field, string value) => Bytes(field, System.Text.Encoding.UTF8.GetBytes(value));

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
