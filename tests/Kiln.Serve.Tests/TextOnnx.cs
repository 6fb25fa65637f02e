using static Kiln.Serve.Tests.OnnxWire;

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
        [Node("Gather", ["E", "input_ids"], ["last_hidden_state"])],
        [FloatTensor("E", [Vocab.Length, Width], EmbeddingTable())],
        ValueInfo("last_hidden_state", Float, ["N", "T", Width]));

    public static byte[] Classifier() => Model(
        [
            Node("Gather", ["E", "input_ids"], ["emb"]),
            Node("Cast", ["attention_mask"], ["maskf"], OnnxWire.Attribute("to", 1)),
            Node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            Node("Mul", ["emb", "mask3"], ["masked"]),
            Node("ReduceSum", ["masked", "axis1"], ["sum"], OnnxWire.Attribute("keepdims", 0)),
            Node("ReduceSum", ["mask3", "axis1"], ["count"], OnnxWire.Attribute("keepdims", 0)),
            Node("Div", ["sum", "count"], ["pooled"]),
            Node("MatMul", ["pooled", "W"], ["xw"]),
            Node("Add", ["xw", "B"], ["logits"]),
        ],
        [
            FloatTensor("E", [Vocab.Length, Width], EmbeddingTable()),
            FloatTensor("W", [Width, Classes], Weights()),
            FloatTensor("B", [Classes], Bias()),
            Int64Tensor("axis1", [1], [1]),
            Int64Tensor("axis2", [1], [2]),
        ],
        ValueInfo("logits", Float, ["N", Classes]));

    private static float[] EmbeddingTable() => [.. Enumerable.Range(0, Vocab.Length).SelectMany(Embedding)];

    private static byte[] Model(byte[][] nodes, byte[][] initializers, byte[] output) => OnnxWire.Model(
        "text",
        nodes,
        initializers,
        [ValueInfo("input_ids", OnnxWire.Int64, ["N", "T"]), ValueInfo("attention_mask", OnnxWire.Int64, ["N", "T"]), ValueInfo("token_type_ids", OnnxWire.Int64, ["N", "T"])],
        [output]);
}
