namespace Kiln.Serve.Tests;

/// <summary>
/// Tiny BERT-shaped ONNX models written by hand (protobuf wire format) with int64 inputs <c>input_ids</c>,
/// <c>attention_mask</c> and <c>token_type_ids</c> [N,T], over the WordPiece vocabulary <see cref="Vocab"/>:
/// <list type="bullet">
/// <item><see cref="Encoder"/>: <c>last_hidden_state</c>[N,T,D] = Gather(E, input_ids) (token embeddings, no mixing).</item>
/// <item><see cref="Classifier"/>: <c>logits</c>[N,C] = (Σ_t mask·E[ids]) / Σ_t mask · W + B (masked mean, then linear).</item>
/// </list>
/// The expected outputs are computed here with the same arithmetic.
/// </summary>
internal static class TextOnnx
{
    public const int Width = 3;
    public const int Classes = 4;

    /// <summary>The vocabulary, one token a line (line number = id): BERT's special tokens first.</summary>
    public static readonly string[] Vocab =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "dog", "ran", "good", "bad", "movie", "##s", "game", "stock", "market", ".", "!"];

    public static int Id(string token) => Array.IndexOf(Vocab, token) is var id and >= 0 ? id : throw new ArgumentException(token);

    /// <summary>The embedding of token <paramref name="id"/> (distinct, non-trivial values).</summary>
    public static float[] Embedding(int id) => [.. Enumerable.Range(0, Width).Select(d => ((((id * 7) + (d * 3)) % 11) - 5) / 4f + (id * 0.01f))];

    public static float[] Weights() => [.. Enumerable.Range(0, Width * Classes).Select(i => ((i * 5 % 13) - 6) / 3f)];

    public static float[] Bias() => [0.25f, -0.5f, 0.125f, 0f];

    /// <summary>The classifier's logits for one unpadded sequence of ids.</summary>
    public static double[] Logits(int[] ids)
    {
        double[] pooled = new double[Width];
        foreach (int id in ids)
        {
            float[] e = Embedding(id);
            for (int d = 0; d < Width; d++)
            {
                pooled[d] += e[d];
            }
        }
        float[] w = Weights();
        float[] b = Bias();
        double[] logits = new double[Classes];
        for (int c = 0; c < Classes; c++)
        {
            double sum = 0;
            for (int d = 0; d < Width; d++)
            {
                sum += pooled[d] / ids.Length * w[(d * Classes) + c];
            }
            logits[c] = sum + b[c];
        }
        return logits;
    }

    public static double[] Softmax(double[] logits)
    {
        double max = logits.Max();
        double[] e = [.. logits.Select(l => Math.Exp(l - max))];
        double sum = e.Sum();
        return [.. e.Select(v => v / sum)];
    }

    public static byte[] Encoder() => Model(
        [Node("Gather", ["E", "input_ids"], "last_hidden_state")],
        [Tensor("E", [Vocab.Length, Width], EmbeddingTable())],
        Output("last_hidden_state", 1, ["N", "T", Width]));

    public static byte[] Classifier() => Model(
        [
            Node("Gather", ["E", "input_ids"], "emb"),
            Node("Cast", ["attention_mask"], "maskf", IntAttribute("to", 1)),
            Node("Unsqueeze", ["maskf", "axis2"], "mask3"),
            Node("Mul", ["emb", "mask3"], "masked"),
            Node("ReduceSum", ["masked", "axis1"], "sum", IntAttribute("keepdims", 0)),
            Node("ReduceSum", ["mask3", "axis1"], "count", IntAttribute("keepdims", 0)),
            Node("Div", ["sum", "count"], "pooled"),
            Node("MatMul", ["pooled", "W"], "xw"),
            Node("Add", ["xw", "B"], "logits"),
        ],
        [
            Tensor("E", [Vocab.Length, Width], EmbeddingTable()),
            Tensor("W", [Width, Classes], Weights()),
            Tensor("B", [Classes], Bias()),
            Int64Tensor("axis1", [1], [1]),
            Int64Tensor("axis2", [1], [2]),
        ],
        Output("logits", 1, ["N", Classes]));

    private static float[] EmbeddingTable() => [.. Enumerable.Range(0, Vocab.Length).SelectMany(Embedding)];

    private static byte[] Model(byte[][] nodes, byte[][] initializers, byte[] output)
    {
        byte[] graph = Concat(
            Concat([.. nodes.Select(n => Bytes(1, n))]),
            String(2, "text"),
            Concat([.. initializers.Select(t => Bytes(5, t))]),
            Bytes(11, ValueInfo("input_ids", 7, ["N", "T"])),
            Bytes(11, ValueInfo("attention_mask", 7, ["N", "T"])),
            Bytes(11, ValueInfo("token_type_ids", 7, ["N", "T"])),
            Bytes(12, output));
        return Concat(
            Varint(1, 8),                                   // ir_version
            Bytes(8, Concat(String(1, ""), Varint(2, 13))),  // opset_import: default domain, opset 13
            Bytes(7, graph));
    }

    private static byte[] Output(string name, int elementType, object[] dims) => ValueInfo(name, elementType, dims);

    private static byte[] Node(string op, string[] inputs, string output, byte[]? attribute = null) =>
        Concat([.. inputs.Select(i => String(1, i)), String(2, output), String(4, op), attribute is null ? [] : Bytes(5, attribute)]);

    /// <summary>An AttributeProto of type INT: name (1), i (3), type (20) = 2.</summary>
    private static byte[] IntAttribute(string name, long value) => Concat(String(1, name), Varint(3, (ulong)value), Varint(20, 2));

    /// <summary>A TensorProto with raw_data: dims (1), data_type (2), name (8), raw_data (9).</summary>
    private static byte[] Tensor(string name, long[] dims, float[] values)
    {
        byte[] data = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, data, 0, data.Length);
        return Concat([.. dims.Select(d => Varint(1, (ulong)d)), Varint(2, 1), String(8, name), Bytes(9, data)]);
    }

    private static byte[] Int64Tensor(string name, long[] dims, long[] values)
    {
        byte[] data = new byte[values.Length * 8];
        Buffer.BlockCopy(values, 0, data, 0, data.Length);
        return Concat([.. dims.Select(d => Varint(1, (ulong)d)), Varint(2, 7), String(8, name), Bytes(9, data)]);
    }

    /// <summary>A ValueInfoProto: name, TypeProto.tensor_type { elem_type, shape { dim: dim_value | dim_param } }.</summary>
    private static byte[] ValueInfo(string name, int elementType, object[] dims)
    {
        byte[] shape = Concat([.. dims.Select(d => Bytes(1, d is int v ? Varint(1, (ulong)v) : String(2, (string)d)))]);
        byte[] tensorType = Concat(Varint(1, (ulong)elementType), Bytes(2, shape));
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
