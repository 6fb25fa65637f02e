using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Tests;

public sealed class QuantizationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-quant-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    /// <summary>x[4,64] → MatMul(W1 64×128) + b1 → Relu → MatMul(W2 128×32) + b2 → y, random weights.</summary>
    private static OnnxModel Mlp() => new GraphBuilder()
        .Input("x", 4, 64).Output("y", 4, 32)
        .Initializer("W1", [64, 128], Random(64 * 128, 1, 0.2f)).Initializer("b1", [128], Random(128, 2, 0.1f))
        .Initializer("W2", [128, 32], Random(128 * 32, 3, 0.2f)).Initializer("b2", [32], Random(32, 4, 0.1f))
        .Node("MatMul", ["x", "W1"], ["h"], "fc1").Node("Add", ["h", "b1"], ["hb"]).Node("Relu", ["hb"], ["r"])
        .Node("MatMul", ["r", "W2"], ["o"], "fc2").Node("Add", ["o", "b2"], ["y"]).Build();

    private static double Cosine(double[] a, double[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }

    [Fact]
    public void MatMuls_BecomeTheIntegerPattern_CloseToFloat_AndFourTimesSmallerWeights()
    {
        OnnxModel model = Mlp();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 7);
        double[] expected = ModelRunner.Run(model, inputs)["y"].Values;
        int floatBytes = model.ToBytes().Length;

        OnnxModel quantized = model.Clone();
        new DynamicInt8Quantizer().Apply(quantized).ShouldBe(["fc1", "fc2"]);

        GraphProto graph = quantized.Proto.Graph;
        graph.Node.Count(n => n.OpType == "DynamicQuantizeLinear").ShouldBe(2);
        graph.Node.Count(n => n.OpType == "MatMulInteger").ShouldBe(2);
        graph.Node.ShouldNotContain(n => n.OpType == "MatMul");
        graph.Initializer.Select(i => i.Name).ShouldNotContain("W1");
        graph.Initializer.Single(i => i.Name == "W1_quantized").DataType.ShouldBe((int)TensorProto.Types.DataType.Int8);
        double cosine = Cosine(expected, ModelRunner.Run(quantized, inputs)["y"].Values);
        cosine.ShouldBeGreaterThan(0.999);
        quantized.ToBytes().Length.ShouldBeLessThan(floatBytes / 3);
    }

    [Fact]
    public void OnnxRuntime_FusesThePattern_IntoDynamicQuantizeMatMul()
    {
        OnnxModel quantized = Mlp();
        new DynamicInt8Quantizer().Apply(quantized);
        string optimizedPath = Path.Combine(_dir, "optimized.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (var session = new InferenceSession(quantized.ToBytes(), options))
        {
        }
        string[] ops = [.. OnnxModel.Load(optimizedPath).Proto.Graph.Node.Select(n => n.OpType)];
        ops.Count(o => o == "DynamicQuantizeMatMul").ShouldBe(2, string.Join(",", ops));
        ops.ShouldNotContain("MatMulInteger");
    }

    [Fact]
    public void PerChannelScales_FollowColumnsOfDifferentRange_AndStillFuse()
    {
        // Column 0 of W is 100× larger than the rest: one scale for the tensor flattens the small columns.
        float[] w = Random(16 * 8, 5, 0.1f);
        for (int k = 0; k < 16; k++)
        {
            w[k * 8] *= 100;
        }
        OnnxModel Build() => new GraphBuilder().Input("x", 2, 16).Output("y", 2, 8)
            .Initializer("W", [16, 8], w).Node("MatMul", ["x", "W"], ["y"], "fc").Build();
        OnnxModel model = Build();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 3);
        TensorValue expected = ModelRunner.Run(model, inputs)["y"];
        double Error(bool perChannel)
        {
            OnnxModel q = Build();
            new DynamicInt8Quantizer { PerChannel = perChannel }.Apply(q);
            double[] actual = ModelRunner.Run(q, inputs)["y"].Values;
            // The small columns only (1..7 of each row).
            return Enumerable.Range(0, actual.Length).Where(i => i % 8 != 0).Max(i => Math.Abs(actual[i] - expected.Values[i]));
        }
        double perTensor = Error(false), perChannel = Error(true);
        perChannel.ShouldBeLessThan(perTensor / 5, $"per tensor {perTensor:G3}, per channel {perChannel:G3}");

        OnnxModel fused = Build();
        new DynamicInt8Quantizer { PerChannel = true }.Apply(fused);
        fused.Proto.Graph.Initializer.Single(i => i.Name == "W_scale").Dims.ShouldBe([8]);
        string optimizedPath = Path.Combine(_dir, "per-channel.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (var session = new InferenceSession(fused.ToBytes(), options))
        {
        }
        OnnxModel.Load(optimizedPath).Proto.Graph.Node.Select(n => n.OpType).ShouldContain("DynamicQuantizeMatMul");
    }

    [Fact]
    public void ExcludedNodes_StayFloat()
    {
        OnnxModel quantized = Mlp();
        new DynamicInt8Quantizer { Exclude = new HashSet<string> { "fc2" } }.Apply(quantized).ShouldBe(["fc1"]);
        quantized.Proto.Graph.Node.Single(n => n.OpType == "MatMul").Name.ShouldBe("fc2");
        quantized.Proto.Graph.Initializer.Select(i => i.Name).ShouldContain("W2");
    }

    [Fact]
    public void OpsetBelow10_IsRefused_Naming()
    {
        OnnxModel old = Mlp();
        old.Proto.OpsetImport[0].Version = 9;
        var error = Should.Throw<OptimizeException>(() => new DynamicInt8Quantizer().Apply(old));
        error.Message.ShouldContain("opset 9");
        error.Message.ShouldContain("needs opset 10");
    }
}
