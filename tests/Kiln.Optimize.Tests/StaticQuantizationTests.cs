using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class StaticQuantizationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-static-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    /// <summary>A small residual CNN: Conv+Relu, MaxPool, Conv+Relu, Add, Relu, GlobalAveragePool, Flatten, Gemm.</summary>
    internal static OnnxModel Cnn() => new GraphBuilder()
        .Input("x", 1, 3, 16, 16).Output("y", 1, 4)
        .Initializer("W1", [8, 3, 3, 3], Random(8 * 27, 1, 0.3f)).Initializer("b1", [8], Random(8, 2, 0.1f))
        .Initializer("W2", [8, 8, 3, 3], Random(8 * 72, 3, 0.2f)).Initializer("b2", [8], Random(8, 4, 0.1f))
        .Initializer("Wfc", [4, 8], Random(32, 5, 0.5f)).Initializer("bfc", [4], Random(4, 6, 0.1f))
        .Node("Conv", ["x", "W1", "b1"], ["c1"], "conv1").Attribute("pads", [1L, 1L, 1L, 1L])
        .Node("Relu", ["c1"], ["r1"], "relu1")
        .Node("MaxPool", ["r1"], ["p1"], "pool").Attribute("kernel_shape", [2L, 2L]).Attribute("strides", [2L, 2L])
        .Node("Conv", ["p1", "W2", "b2"], ["c2"], "conv2").Attribute("pads", [1L, 1L, 1L, 1L])
        .Node("Relu", ["c2"], ["r2"], "relu2")
        .Node("Add", ["r2", "p1"], ["s"], "add")
        .Node("Relu", ["s"], ["r3"], "relu3")
        .Node("GlobalAveragePool", ["r3"], ["g"], "gap")
        .Node("Flatten", ["g"], ["f"], "flatten")
        .Node("Gemm", ["f", "Wfc", "bfc"], ["y"], "fc").Attribute("transB", 1L)
        .Build();

    private static IReadOnlyDictionary<string, TensorValue>[] Samples(OnnxModel model, int count, int seed) =>
        [.. Enumerable.Range(seed, count).Select(s => ModelRunner.SampleInputs(model, seed: s))];

    private static double MeanCosine(OnnxModel reference, OnnxModel quantized, IReadOnlyDictionary<string, TensorValue>[] samples) =>
        samples.Average(s => ModelRunner.Cosine(ModelRunner.Run(reference, s), ModelRunner.Run(quantized, s)));

    private static OnnxModel Quantized(OnnxModel model, CalibrationMethod method, bool symmetric = false, bool perChannel = true)
    {
        List<string> tensors = StaticInt8Quantizer.TensorsToCalibrate(model);
        Dictionary<string, TensorRange> ranges = new Calibrator(method).Collect(model, tensors, Samples(model, 16, 100), symmetric);
        OnnxModel copy = model.Clone();
        new StaticInt8Quantizer { Ranges = ranges, SymmetricActivations = symmetric, PerChannel = perChannel }.Apply(copy);
        return copy;
    }

    [Theory]
    [InlineData(CalibrationMethod.MinMax, false)]
    [InlineData(CalibrationMethod.Percentile, false)]
    [InlineData(CalibrationMethod.Entropy, false)]
    [InlineData(CalibrationMethod.MinMax, true)]
    public void Cnn_QuantizedStatically_StaysCloseToFloat_OnInputsItWasNotCalibratedOn(CalibrationMethod method, bool symmetric)
    {
        OnnxModel model = Cnn();
        OnnxModel quantized = Quantized(model, method, symmetric);
        MeanCosine(model, quantized, Samples(model, 6, 1)).ShouldBeGreaterThan(0.995);
    }

    [Fact]
    public void TheGraph_IsQdq_WithInt8Weights_Int32Biases_AndFoldedRelus()
    {
        OnnxModel model = Cnn();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 4, 100));
        OnnxModel copy = model.Clone();
        List<string> quantized = new StaticInt8Quantizer { Ranges = ranges }.Apply(copy);

        quantized.ShouldBe(["relu1", "conv1", "pool", "relu2", "conv2", "relu3", "add", "gap", "flatten", "fc"], ignoreOrder: true);
        GraphProto graph = copy.Proto.Graph;
        graph.Node.ShouldNotContain(n => n.OpType == "Relu");
        graph.Initializer.Select(i => i.Name).ShouldNotContain("W1");
        graph.Initializer.Single(i => i.Name == "W1_quantized").DataType.ShouldBe((int)TensorProto.Types.DataType.Int8);
        graph.Initializer.Single(i => i.Name == "W1_scale").Dims.ShouldBe([8]);
        TensorProto bias = graph.Initializer.Single(i => i.Name == "b1_quantized");
        bias.DataType.ShouldBe((int)TensorProto.Types.DataType.Int32);
        // bias scale = input scale × weight scale, per output channel
        float inputScale = graph.Initializer.Single(i => i.Name == "x_scale").RawData.ToByteArray() is var s ? BitConverter.ToSingle(s) : 0;
        float[] weightScales = FloatTensor.Read(graph.Initializer.Single(i => i.Name == "W1_scale"));
        FloatTensor.Read(graph.Initializer.Single(i => i.Name == "b1_scale")).ShouldBe([.. weightScales.Select(w => w * inputScale)], tolerance: 1e-9);
        // Relu outputs are quantized with zero point 0 (uint8): the clamp at 0 is the Relu.
        graph.Initializer.Single(i => i.Name == "r1_zero_point").RawData.ToByteArray().ShouldBe([(byte)0]);
        // One DequantizeLinear per consumer: p1 feeds conv2 and add.
        graph.Node.Count(n => n.OpType == "DequantizeLinear" && n.Input[0] == graph.Node.Single(q => q.OpType == "QuantizeLinear" && q.Input[0] == "p1").Output[0]).ShouldBe(2);
        graph.Output.Single().Name.ShouldBe("y");
    }

    [Fact]
    public void OnnxRuntime_FusesTheQdqUnits_IntoIntegerKernels()
    {
        OnnxModel quantized = Quantized(Cnn(), CalibrationMethod.MinMax);
        string optimizedPath = Path.Combine(_dir, "optimized.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (var session = new InferenceSession(quantized.ToBytes(), options))
        {
        }
        string[] ops = [.. OnnxModel.Load(optimizedPath).Proto.Graph.Node.Select(n => n.OpType)];
        string all = string.Join(",", ops);
        ops.Count(o => o == "QLinearConv").ShouldBe(2, all);
        ops.ShouldContain("QLinearAdd", all);
        ops.ShouldContain("QLinearGlobalAveragePool", all);
        ops.ShouldContain("QGemm", all);
        ops.ShouldNotContain("Conv", all);
        ops.ShouldNotContain("Gemm", all);
        // MaxPool and Flatten run on the integers: their Q/DQ pairs are gone.
        ops.Count(o => o == "DequantizeLinear").ShouldBeLessThanOrEqualTo(1, all);
    }

    [Fact]
    public void ModelOptimizer_StaticInt8_UnderAnUnreachableBudget_KeepsTheFloatModel_AndUnderALooseOne_QuantizesAll()
    {
        OnnxModel model = Cnn();
        string path = Path.Combine(_dir, "cnn-budget.onnx");
        model.Save(path);
        string calibration = Path.Combine(_dir, "calibration-budget");
        Directory.CreateDirectory(calibration);
        for (int s = 0; s < 4; s++)
        {
            SampleSet.Write(Path.Combine(calibration, $"{s}.npy"), ModelRunner.SampleInputs(model, seed: 80 + s)["x"]);
        }
        OptimizationReport Run(string budget) => ModelOptimizer.Run(path, Path.Combine(_dir, "out-budget.onnx"), new OptimizeOptions
        {
            Quantize = QuantizeMode.StaticInt8, CalibrationDirectory = calibration, MeasureTime = TimeSpan.FromMilliseconds(20),
            Budgets = [AccuracyBudgetSpec.Parse(budget)],
        });
        // int8 cannot reproduce float outputs to 1e-9: every node stays float, and the report says the float model is kept.
        OptimizationReport strict = Run("maxabs<=1e-9");
        strict.Steps.Single(s => s.Step == "int8-static").Detail.ShouldContain("the float model is kept");
        OnnxModel.Load(Path.Combine(_dir, "out-budget.onnx")).Proto.Graph.Node.ShouldNotContain(n => n.OpType == "QuantizeLinear");
        strict.Result.MaxAbsError.ShouldBe(0, 1e-6);
        OptimizationReport loose = Run("cosine>=0.9");
        loose.Steps.Single(s => s.Step == "int8-static").Detail.ShouldStartWith("10 node(s) quantized, 0 kept float");
        OnnxModel.Load(Path.Combine(_dir, "out-budget.onnx")).Proto.Graph.Node.ShouldContain(n => n.OpType == "QuantizeLinear");
    }

    [Fact]
    public void ModelOptimizer_WithInputs_ComparesOnAllOfThem_AndMeasuresTheFirst()
    {
        OnnxModel model = Cnn();
        string path = Path.Combine(_dir, "cnn.onnx");
        model.Save(path);
        string calibration = Path.Combine(_dir, "calibration"), inputs = Path.Combine(_dir, "inputs");
        Directory.CreateDirectory(calibration);
        Directory.CreateDirectory(inputs);
        for (int s = 0; s < 8; s++)
        {
            SampleSet.Write(Path.Combine(s < 5 ? calibration : inputs, $"{s}.npy"), ModelRunner.SampleInputs(model, seed: 50 + s)["x"]);
        }
        OptimizationReport report = ModelOptimizer.Run(path, Path.Combine(_dir, "out.onnx"),
            new OptimizeOptions { Quantize = QuantizeMode.StaticInt8, CalibrationDirectory = calibration, InputsDirectory = inputs, MeasureTime = TimeSpan.FromMilliseconds(20) });
        report.Steps.ShouldNotContain(s => s.Step == "opset-upgrade"); // already opset 17
        report.Steps.Single(s => s.Step == "int8-static").Detail.ShouldStartWith("10 node(s) quantized, uint8 activations calibrated on 5 sample(s) (minmax)");
        report.Steps.Single(s => s.Step == "inputs").Detail.ShouldContain("over 3 inputs: mean 0.99");
        report.Result.Cosine.ShouldBeGreaterThan(0.99);
    }

    [Fact]
    public void MatMuls_Concat_Mul_Sigmoid_AndLeakyRelu_FuseToo()
    {
        // MatMul by constants, Concat, Mul of two activations, Sigmoid, LeakyRelu, and a MatMul of two activations (l × xᵀ).
        OnnxModel model = new GraphBuilder().Input("x", 4, 16).Output("y", 4, 4)
            .Initializer("W", [16, 8], Random(128, 7, 0.3f)).Initializer("V", [16, 8], Random(128, 8, 0.3f))
            .Node("MatMul", ["x", "W"], ["a"], "mm_w").Node("MatMul", ["x", "V"], ["b"], "mm_v")
            .Node("Concat", ["a", "b"], ["c"], "concat").Attribute("axis", 1L)
            .Node("Mul", ["c", "x"], ["m"], "mul").Node("Sigmoid", ["m"], ["s"], "sigmoid")
            .Node("LeakyRelu", ["s"], ["l"], "leaky").Attribute("alpha", 0.1f)
            .Node("Transpose", ["x"], ["xt"], "transpose")
            .Node("MatMul", ["l", "xt"], ["y"], "mm_act")
            .Build();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 8, 100));
        OnnxModel quantized = model.Clone();
        new StaticInt8Quantizer { Ranges = ranges }.Apply(quantized).Count.ShouldBe(8);
        MeanCosine(model, quantized, Samples(model, 4, 1)).ShouldBeGreaterThan(0.99);
        string optimizedPath = Path.Combine(_dir, "ops.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (var session = new InferenceSession(quantized.ToBytes(), options))
        {
        }
        string[] ops = [.. OnnxModel.Load(optimizedPath).Proto.Graph.Node.Select(n => n.OpType)];
        string all = string.Join(",", ops);
        ops.Count(o => o == "QLinearMatMul").ShouldBe(3, all);
        ops.ShouldContain("QLinearConcat", all);
        ops.ShouldContain("QLinearMul", all);
        ops.ShouldContain("QLinearSigmoid", all);
        ops.ShouldContain("QLinearLeakyRelu", all);
        ops.ShouldNotContain("MatMul", all);
    }

    [Fact]
    public void SliceResizeGatherTileSplitPad_KeepTheirInputsScale_AndStayCloseToFloat()
    {
        OnnxModel model = new GraphBuilder().Input("x", 1, 3, 8, 8).Output("y", 1, 4, 8, 16)
            .Initializer("W1", [6, 3, 3, 3], Random(6 * 27, 11, 0.3f)).Initializer("W2", [4, 4, 3, 3], Random(4 * 36, 12, 0.3f))
            .Int64Initializer("starts", [1], 1).Int64Initializer("ends", [1], 5).Int64Initializer("axes", [1], 1)
            .Initializer("scales", [4], 1f, 1f, 2f, 2f).Int64Initializer("pick", [2], 0, 3).Int64Initializer("reps", [4], 1, 2, 1, 1)
            .Int64Initializer("halves", [2], 2, 2).Int64Initializer("pads", [8], 0, 0, 1, 1, 0, 0, 1, 1)
            .Int64Initializer("nopads", [8], 0, 0, 0, 0, 0, 0, 0, 0).Initializer("seven", [], 7f)
            .Node("Conv", ["x", "W1"], ["c1"], "conv1").Attribute("pads", [1L, 1L, 1L, 1L])
            .Node("Relu", ["c1"], ["r1"], "relu1")
            .Node("Slice", ["r1", "starts", "ends", "axes"], ["sl"], "slice")
            .Node("Resize", ["sl", "", "scales"], ["up"], "resize").Attribute("mode", "linear")
            .Node("Gather", ["up", "pick"], ["g"], "gather").Attribute("axis", 1L)
            .Node("Tile", ["g", "reps"], ["t"], "tile")
            .Node("Split", ["t", "halves"], ["t1", "t2"], "split").Attribute("axis", 1L)
            .Node("Concat", ["t2", "t1"], ["tt"], "concat").Attribute("axis", 1L)
            .Node("Pad", ["tt", "pads"], ["pd"], "pad")
            .Node("Pad", ["pd", "nopads", "seven"], ["p7"], "pad7") // a pad value of 7 would need its own range: stays float
            .Node("Conv", ["p7", "W2"], ["c2"], "conv2").Attribute("strides", [2L, 1L]).Attribute("pads", [0L, 0L, 0L, 0L])
            .Node("Relu", ["c2"], ["y"], "relu2")
            .Build();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 8, 100));
        OnnxModel quantized = model.Clone();
        new StaticInt8Quantizer { Ranges = ranges }.Apply(quantized).ShouldBe(["conv1", "relu1", "slice", "resize", "gather", "tile", "split", "concat", "pad", "conv2", "relu2"], ignoreOrder: true);
        // Every pass-through output is dequantized with conv1's (folded Relu's) scale: one scale, no new ranges.
        GraphProto graph = quantized.Proto.Graph;
        string ScaleOfDequantizeReading(string stem) =>
            graph.Node.First(n => n.OpType == "DequantizeLinear" && n.Input[0].StartsWith(stem + "_quantized", StringComparison.Ordinal)).Input[1];
        string scale = ScaleOfDequantizeReading("r1");
        foreach (string value in (string[])["sl", "up", "g", "t", "t1", "t2"])
        {
            ScaleOfDequantizeReading(value).ShouldBe(scale, value);
        }
        MeanCosine(model, quantized, Samples(model, 4, 1)).ShouldBeGreaterThan(0.99);
    }

    [Fact]
    public void ACubicResize_KeepsItsOwnRange()
    {
        OnnxModel model = new GraphBuilder().Input("x", 1, 3, 8, 8).Output("y", 1, 3, 16, 16)
            .Initializer("W", [3, 3, 3, 3], Random(81, 13, 0.3f)).Initializer("scales", [4], 1f, 1f, 2f, 2f)
            .Node("Conv", ["x", "W"], ["c"], "conv").Attribute("pads", [1L, 1L, 1L, 1L])
            .Node("Relu", ["c"], ["r"], "relu")
            .Node("Resize", ["r", "", "scales"], ["up"], "resize").Attribute("mode", "cubic")
            .Node("Conv", ["up", "W"], ["y"], "conv2").Attribute("pads", [1L, 1L, 1L, 1L])
            .Build();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 4, 100));
        OnnxModel quantized = model.Clone();
        // Cubic weights go negative: the output can leave the input's range, so the Resize is not passed through.
        new StaticInt8Quantizer { Ranges = ranges }.Apply(quantized).ShouldBe(["conv", "relu", "conv2"], ignoreOrder: true);
        MeanCosine(model, quantized, Samples(model, 2, 1)).ShouldBeGreaterThan(0.99);
    }

    [Fact]
    public void ABiasAdd_AfterAMatMul_IsQuantizedWithItsConstant_AndFuses()
    {
        OnnxModel model = new GraphBuilder().Input("x", 4, 16).Output("y", 4, 8)
            .Initializer("W", [16, 8], Random(128, 7, 0.3f)).Initializer("b", [8], Random(8, 8, 0.5f))
            .Node("MatMul", ["x", "W"], ["h"], "fc").Node("Add", ["h", "b"], ["y"], "bias").Build();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 8, 100));
        OnnxModel quantized = model.Clone();
        new StaticInt8Quantizer { Ranges = ranges }.Apply(quantized).ShouldBe(["fc", "bias"]);
        quantized.Proto.Graph.Initializer.Single(i => i.Name == "b_quantized").DataType.ShouldBe((int)TensorProto.Types.DataType.Uint8);
        quantized.Proto.Graph.Initializer.Select(i => i.Name).ShouldNotContain("b");
        MeanCosine(model, quantized, Samples(model, 4, 1)).ShouldBeGreaterThan(0.995);
        string optimizedPath = Path.Combine(_dir, "bias.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimizedPath })
        using (var session = new InferenceSession(quantized.ToBytes(), options))
        {
        }
        string[] ops = [.. OnnxModel.Load(optimizedPath).Proto.Graph.Node.Select(n => n.OpType)];
        ops.ShouldContain("QLinearMatMul", string.Join(",", ops));
        ops.ShouldContain("QLinearAdd", string.Join(",", ops));
        ops.ShouldNotContain("Add");
    }

    [Fact]
    public void AnOldOpset_IsRefused_Naming()
    {
        OnnxModel model = Cnn();
        model.Proto.OpsetImport[0].Version = 11;
        var error = Should.Throw<OptimizeException>(() => new StaticInt8Quantizer().Apply(model));
        error.Message.ShouldContain("opset 11");
        error.Message.ShouldContain("needs opset 13");
    }

    [Fact]
    public void ExcludedNodes_StayFloat()
    {
        OnnxModel model = Cnn();
        var ranges = new Calibrator(CalibrationMethod.MinMax).Collect(model, StaticInt8Quantizer.TensorsToCalibrate(model), Samples(model, 2, 100));
        OnnxModel copy = model.Clone();
        new StaticInt8Quantizer { Ranges = ranges, Exclude = new HashSet<string> { "fc" } }.Apply(copy).ShouldNotContain("fc");
        copy.Proto.Graph.Node.Single(n => n.OpType == "Gemm").Input[1].ShouldBe("Wfc");
    }

    /// <summary>x → Relu → r → Neg → y over samples of values in [0, 1) and one outlier of 20.</summary>
    [Fact]
    public void Percentile_AndEntropy_ClipAnOutlier_ThatMinMaxKeeps_ButNotOnGraphOutputs()
    {
        OnnxModel model = new GraphBuilder().Input("x", 1, 1000).Output("y", 1, 1000).Node("Relu", ["x"], ["r"]).Node("Neg", ["r"], ["y"]).Build();
        var random = new Random(9);
        IReadOnlyDictionary<string, TensorValue>[] samples = [.. Enumerable.Range(0, 20).Select(s =>
        {
            double[] values = [.. Enumerable.Range(0, 1000).Select(_ => random.NextDouble())];
            if (s == 3)
            {
                values[17] = 20;
            }
            return (IReadOnlyDictionary<string, TensorValue>)new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [1, 1000], values) };
        })];
        TensorRange minMax = new Calibrator(CalibrationMethod.MinMax).Collect(model, ["r"], samples)["r"];
        TensorRange percentile = new Calibrator(CalibrationMethod.Percentile, percentile: 99.9).Collect(model, ["r"], samples)["r"];
        Dictionary<string, TensorRange> entropyRanges = new Calibrator(CalibrationMethod.Entropy).Collect(model, ["r", "y"], samples);
        TensorRange entropy = entropyRanges["r"];
        entropyRanges["y"].Min.ShouldBe(-20f); // a graph output keeps what was seen
        minMax.Max.ShouldBe(20f);
        minMax.Min.ShouldBeGreaterThanOrEqualTo(0f);
        percentile.Max.ShouldBeInRange(0.9f, 2f);
        entropy.Max.ShouldBeInRange(0.9f, 5f);
        entropy.Min.ShouldBe(minMax.Min);
    }
}

/// <summary>The whole path on ResNet-18 from its NuGet package (opset 8): upgrade, passes, calibration, QDQ, fusion by ONNX Runtime.</summary>
public sealed class ResNetStaticInt8Tests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-resnet-static-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ModelOptimizer_UpgradesCalibratesAndQuantizes_ResNet18_IntoQLinearConvs()
    {
        OnnxModel model = OnnxModel.Load(OpsetUpgradeTests.ResNet18Onnx);
        string calibration = Path.Combine(_dir, "calibration");
        Directory.CreateDirectory(calibration);
        var random = new Random(4);
        for (int s = 0; s < 4; s++)
        {
            // Smooth images in the preprocessed range (0–255 minus a mean image): a gradient plus noise.
            double[] values = [.. Enumerable.Range(0, 3 * 224 * 224).Select(i => (((i % 224) + (s * 30)) % 255) - 120 + (random.NextDouble() * 20))];
            SampleSet.Write(Path.Combine(calibration, $"{s}.npy"), new TensorValue(TensorElementType.Float, [1, 3, 224, 224], values));
        }
        string output = Path.Combine(_dir, "int8.onnx");
        OptimizationReport report = ModelOptimizer.Run(OpsetUpgradeTests.ResNet18Onnx, output,
            new OptimizeOptions { Quantize = QuantizeMode.StaticInt8, CalibrationDirectory = calibration, CalibrationMethod = CalibrationMethod.Percentile, MeasureTime = TimeSpan.FromMilliseconds(50) });

        report.Steps.ShouldContain(s => s.Step == "opset-upgrade" && s.Detail.StartsWith("opset 8 → 13", StringComparison.Ordinal));
        StepOutcome quantize = report.Steps.Single(s => s.Step == "int8-static");
        quantize.Detail.ShouldContain("calibrated on 4 sample(s) (percentile)");
        report.Result.Cosine.ShouldBeGreaterThan(0.98);
        report.Result.FileBytes.ShouldBeLessThan(report.Baseline.FileBytes / 3);

        string optimized = Path.Combine(_dir, "ort.onnx");
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = optimized })
        using (var session = new InferenceSession(output, options))
        {
        }
        string[] ops = [.. OnnxModel.Load(optimized).Proto.Graph.Node.Select(n => n.OpType)];
        ops.Count(o => o == "QLinearConv").ShouldBe(22, string.Join(",", ops)); // every Conv of ResNet-18
        ops.Count(o => o == "QLinearAdd").ShouldBe(9); // every residual Add
        ops.ShouldNotContain("Conv");
    }
}
