using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

/// <summary>Dynamic int8 for Gemm, Conv and Gather, checked against the float model in ONNX Runtime.</summary>
public sealed class Int8OpTypesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-int8-ops-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    private static double Cosine(OnnxModel expected, OnnxModel actual, Dictionary<string, TensorValue> inputs) =>
        ModelRunner.Cosine(ModelRunner.Run(expected, inputs), ModelRunner.Run(actual, inputs));

    private string[] OptimizedOps(OnnxModel model)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = path })
        using (var session = new InferenceSession(model.ToBytes(), options))
        {
        }
        return [.. OnnxModel.Load(path).Proto.Graph.Node.Select(n => n.OpType)];
    }

    /// <summary>x[4,32] → Gemm(transB, alpha, beta, bias) → Relu → Gemm(no bias) → y.</summary>
    private static OnnxModel Gemms() => new GraphBuilder()
        .Input("x", 4, 32).Output("y", 4, 8)
        .Initializer("B1", [24, 32], Random(24 * 32, 1, 0.3f)).Initializer("C1", [24], Random(24, 2, 0.2f))
        .Initializer("B2", [24, 8], Random(24 * 8, 3, 0.3f))
        .Node("Gemm", ["x", "B1", "C1"], ["h"], "g1").Attribute("transB", 1L).Attribute("alpha", 0.5f).Attribute("beta", 2f)
        .Node("Relu", ["h"], ["r"]).Node("Gemm", ["r", "B2"], ["y"], "g2").Build();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gemm_TransposedScaledAndBiased_IsQuantized_CloseToFloat_AndFused(bool perChannel)
    {
        OnnxModel model = Gemms();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 4);
        OnnxModel quantized = model.Clone();
        new DynamicInt8Quantizer { PerChannel = perChannel }.Apply(quantized).ShouldBe(["g1", "g2"]);
        quantized.Proto.Graph.Node.ShouldNotContain(n => n.OpType == "Gemm");
        quantized.Proto.Graph.Initializer.Select(i => i.Name).ShouldNotContain("B1");
        quantized.Proto.Graph.Initializer.Single(i => i.Name == "B1_quantized").Dims.ShouldBe([32, 24]);
        Cosine(model, quantized, inputs).ShouldBeGreaterThan(0.999);

        string[] ops = OptimizedOps(quantized);
        ops.Count(o => o == "DynamicQuantizeMatMul").ShouldBe(2, string.Join(",", ops));
        ops.ShouldNotContain("Add");
    }

    [Fact]
    public void Gemm_WithTransposedA_IsLeftAlone()
    {
        OnnxModel model = new GraphBuilder().Input("x", 32, 4).Output("y", 4, 8).Initializer("B", [32, 8], Random(256, 1, 0.3f))
            .Node("Gemm", ["x", "B"], ["y"], "g").Attribute("transA", 1L).Build();
        new DynamicInt8Quantizer().Apply(model).ShouldBeEmpty();
        model.Proto.Graph.Node.Single().OpType.ShouldBe("Gemm");
    }

    /// <summary>x[1,3,10,10] → Conv(4×3×3×3, bias, pads 1, stride 2) → Relu → Conv(1×1, no bias) → y; channel 0's filter 50× the others.</summary>
    private static OnnxModel Convs()
    {
        float[] w1 = Random(4 * 27, 5, 0.2f);
        for (int i = 0; i < 27; i++)
        {
            w1[i] *= 50;
        }
        return new GraphBuilder().Input("x", 1, 3, 10, 10).Output("y", 1, 2, 5, 5)
            .Initializer("W1", [4, 3, 3, 3], w1).Initializer("B1", [4], Random(4, 6, 0.5f)).Initializer("W2", [2, 4, 1, 1], Random(8, 7, 0.5f))
            .Node("Conv", ["x", "W1", "B1"], ["c"], "conv1").Attribute("pads", [1L, 1, 1, 1]).Attribute("strides", [2L, 2]).Attribute("kernel_shape", [3L, 3])
            .Node("Relu", ["c"], ["r"]).Node("Conv", ["r", "W2"], ["y"], "conv2").Build();
    }

    [Fact]
    public void Conv_IsOptIn_AndBecomesConvInteger_CloseToFloat()
    {
        OnnxModel model = Convs();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 8);
        new DynamicInt8Quantizer().Apply(model.Clone()).ShouldBeEmpty();

        double Error(bool perChannel)
        {
            OnnxModel quantized = model.Clone();
            new DynamicInt8Quantizer { PerChannel = perChannel, OpTypes = new HashSet<string> { "Conv" } }.Apply(quantized).ShouldBe(["conv1", "conv2"]);
            quantized.Proto.Graph.Node.Count(n => n.OpType == "ConvInteger").ShouldBe(2);
            quantized.Proto.Graph.Initializer.Single(i => i.Name == "W1_quantized").DataType.ShouldBe((int)TensorProto.Types.DataType.Uint8);
            Cosine(model, quantized, inputs).ShouldBeGreaterThan(0.995);
            return ModelRunner.MaxAbsDifference(ModelRunner.Run(model, inputs), ModelRunner.Run(quantized, inputs));
        }
        double perTensor = Error(false), perChannel = Error(true);
        perChannel.ShouldBeLessThan(perTensor, $"per tensor {perTensor:G3}, per channel {perChannel:G3}");
    }

    /// <summary>ids[2,5] → Gather(table 50×16; row r scaled by 1 + r) → y[2,5,16].</summary>
    private static OnnxModel Embedding()
    {
        float[] table = Random(50 * 16, 9, 0.1f);
        for (int i = 0; i < table.Length; i++)
        {
            table[i] *= 1 + (i / 16);
        }
        OnnxModel model = new GraphBuilder().Output("y", 2, 5, 16).Initializer("table", [50, 16], table)
            .Node("Gather", ["table", "ids"], ["y"], "embed").Build();
        var ids = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Int64, Shape = new TensorShapeProto() };
        ids.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 2 });
        ids.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = 5 });
        model.Proto.Graph.Input.Add(new ValueInfoProto { Name = "ids", Type = new TypeProto { TensorType = ids } });
        return model;
    }

    [Fact]
    public void Gather_OfAnEmbeddingTable_StoresInt8_PerRowBeatsPerTensor()
    {
        OnnxModel model = Embedding();
        var inputs = new Dictionary<string, TensorValue> { ["ids"] = new(TensorElementType.Int64, [2, 5], [0, 1, 2, 3, 4, 0, 10, 20, 49, -1]) };
        double[] expected = ModelRunner.Run(model, inputs)["y"].Values;
        double Error(bool perRow)
        {
            OnnxModel quantized = model.Clone();
            // Per-channel MatMul weights do not make tables per row: that is GatherPerRow.
            new DynamicInt8Quantizer { PerChannel = true, GatherPerRow = perRow }.Apply(quantized).ShouldBe(["embed"]);
            quantized.Proto.Graph.Initializer.Select(i => i.Name).ShouldNotContain("table");
            // Per row: symmetric int8 and a scale per row (Gather, Gather, Cast, Mul); per table: uint8 over the table's range, one DequantizeLinear.
            quantized.Proto.Graph.Initializer.Single(i => i.Name == "table_quantized").DataType.ShouldBe((int)(perRow ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8));
            quantized.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(perRow ? ["Gather", "Gather", "Cast", "Mul"] : ["Gather", "DequantizeLinear"]);
            quantized.ToBytes().Length.ShouldBeLessThan(model.ToBytes().Length / 2);
            double[] actual = ModelRunner.Run(quantized, inputs)["y"].Values;
            return Enumerable.Range(0, 5 * 16).Max(i => Math.Abs(actual[i] - expected[i])); // rows 0–4: small values
        }
        double perTensor = Error(false), perRow = Error(true);
        // Row r's step is max|row| / 127 ≤ 0.1 · (1 + r) / 127; half a step at most.
        perRow.ShouldBeLessThanOrEqualTo((0.1 * 5 / 127 / 2) + 1e-6);
        perRow.ShouldBeLessThan(perTensor / 5, $"per tensor {perTensor:G3}, per row {perRow:G3}");
    }

    [Fact]
    public void OpTypes_SelectWhatIsQuantized_AndUnknownOnesAreRefused()
    {
        OnnxModel model = Gemms();
        new DynamicInt8Quantizer { OpTypes = new HashSet<string> { "MatMul" } }.Apply(model).ShouldBeEmpty();
        Should.Throw<OptimizeException>(() => new DynamicInt8Quantizer { OpTypes = new HashSet<string> { "LSTM" } }.Apply(Gemms())).Message.ShouldContain("LSTM");
    }
}
