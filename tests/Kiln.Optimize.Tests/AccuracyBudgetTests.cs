using Google.Protobuf;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class AccuracyBudgetTests
{
    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    /// <summary>fc1's weight has one column 300× the others, so per-tensor int8 ruins fc1 and leaves fc2 nearly exact.</summary>
    private static OnnxModel SkewedMlp()
    {
        float[] w1 = Random(32 * 16, 11, 0.1f);
        for (int k = 0; k < 32; k++)
        {
            w1[k * 16] *= 300;
        }
        return new GraphBuilder().Input("x", 4, 32).Output("y", 4, 8)
            .Initializer("W1", [32, 16], w1).Initializer("W2", [16, 8], Random(16 * 8, 12, 0.2f))
            .Node("MatMul", ["x", "W1"], ["h"], "fc1").Node("Tanh", ["h"], ["t"]).Node("MatMul", ["t", "W2"], ["y"], "fc2").Build();
    }

    private static IReadOnlyDictionary<string, TensorValue>[] Samples(OnnxModel model, int count) =>
        [.. Enumerable.Range(1, count).Select(seed => ModelRunner.SampleInputs(model, seed))];

    private static AccuracyBudget Int8PerTensor(params string[] budgets) =>
        new(AccuracyBudgetSpec.ParseAll(budgets), exclude => new DynamicInt8Quantizer { PerChannel = false, Exclude = exclude });

    /// <summary>The accuracy of <paramref name="candidate"/> against <paramref name="model"/>, run afresh.</summary>
    private static AccuracyMeasure Check(OnnxModel model, OnnxModel candidate, IReadOnlyDictionary<string, TensorValue>[] samples) =>
        AccuracyMetrics.Compare([.. samples.Select(s => ModelRunner.Run(model, s))], [.. samples.Select(s => ModelRunner.Run(candidate, s))], "y");

    [Theory]
    [InlineData("cosine=0.99", AccuracyMetric.Cosine, 0.99)]
    [InlineData("cosine>=0.995", AccuracyMetric.Cosine, 0.995)]
    [InlineData(" top1 = 0.9 ", AccuracyMetric.Top1, 0.9)]
    [InlineData("top1>=1", AccuracyMetric.Top1, 1.0)]
    [InlineData("maxabs=0.05", AccuracyMetric.MaxAbs, 0.05)]
    [InlineData("MaxAbs<=1e-3", AccuracyMetric.MaxAbs, 0.001)]
    public void Parse_AcceptsTheDocumentedForms(string text, AccuracyMetric metric, double threshold)
    {
        AccuracyBudgetSpec spec = AccuracyBudgetSpec.Parse(text);
        spec.ShouldBe(new AccuracyBudgetSpec(metric, threshold));
        AccuracyBudgetSpec.Parse(spec.ToString()).ShouldBe(spec);
    }

    [Theory]
    [InlineData("cosine")]
    [InlineData("cosine=abc")]
    [InlineData("cosine=1.5")]
    [InlineData("cosine<=0.9")]
    [InlineData("maxabs>=0.1")]
    [InlineData("maxabs=-1")]
    [InlineData("top5=0.9")]
    [InlineData("=0.9")]
    public void Parse_RefusesOtherText_NamingTheAcceptedForms(string text)
    {
        var error = Should.Throw<FormatException>(() => AccuracyBudgetSpec.Parse(text));
        error.Message.ShouldContain(text);
        error.Message.ShouldContain("cosine=V");
        error.Message.ShouldContain("maxabs<=V");
    }

    [Fact]
    public void ParseAll_SplitsCommas_AndBoundsHoldTheRightWay()
    {
        IReadOnlyList<AccuracyBudgetSpec> specs = AccuracyBudgetSpec.ParseAll(["cosine=0.99,top1>=0.5", "maxabs<=0.1"]);
        specs.Select(s => s.Metric).ShouldBe([AccuracyMetric.Cosine, AccuracyMetric.Top1, AccuracyMetric.MaxAbs]);
        new AccuracyMeasure(0.995, 0.5, 0.1).Meets(specs).ShouldBeTrue();
        new AccuracyMeasure(0.995, 0.5, 0.11).Meets(specs).ShouldBeFalse();
        new AccuracyMeasure(0.98, 1, 0).Meets(specs).ShouldBeFalse();
        new AccuracyMeasure(0.995, 0.4, 0).Meets(specs).ShouldBeFalse();
    }

    private static TensorValue Scores(long[] shape, params double[] values) => new(TensorElementType.Float, shape, values);

    [Fact]
    public void TopK_ComparesArgmaxRowByRow_OverTheLastAxis()
    {
        // Three rows of four classes: row 0 agrees, row 1's argmax moves to a close second, row 2's drops to third.
        TensorValue expected = Scores([3, 4], 0.1, 0.9, 0.3, 0.2, 5, 4, 3, 2, 1, 2, 9, 3);
        TensorValue actual = Scores([3, 4], 0.0, 1.0, 0.5, 0.1, 4, 5, 3, 2, 9, 8, 7, 3);
        AccuracyMetrics.TopKAgreement(expected, actual, 1).ShouldBe((1L, 3L));
        AccuracyMetrics.TopKAgreement(expected, actual, 2).ShouldBe((2L, 3L));
        AccuracyMetrics.TopKAgreement(expected, actual, 3).ShouldBe((3L, 3L));
        // [B, T, C]: B·T rows.
        AccuracyMetrics.TopKAgreement(Scores([1, 2, 2], 1, 0, 0, 1), Scores([1, 2, 2], 1, 0, 1, 0), 1).ShouldBe((1L, 2L));
        AccuracyMetrics.LooksLikeClasses(expected).ShouldBeTrue();
        AccuracyMetrics.LooksLikeClasses(Scores([1, 2, 2], 1, 0, 0, 1)).ShouldBeFalse();
    }

    [Fact]
    public void Compare_AggregatesOverSamples_MeanCosine_TopOneOverAllRows_MaxAbsOverAll()
    {
        Dictionary<string, TensorValue> Run(params double[] v) => new() { ["y"] = Scores([2, 2], v) };
        AccuracyMeasure measure = AccuracyMetrics.Compare(
            [Run(1, 0, 0, 1), Run(1, 0, 0, 1)],
            [Run(1, 0, 0, 1), Run(0.5, 0.75, 0, 1)],
            "y");
        measure.Top1.ShouldBe(0.75);
        measure.MaxAbs.ShouldBe(0.75);
        // Second sample: dot 1.5, |e| √2, |a| √(0.25 + 0.5625 + 1).
        measure.Cosine.ShouldBe((1 + (1.5 / Math.Sqrt(2 * 1.8125))) / 2, 1e-12);
    }

    [Fact]
    public void Budget_MetByQuantizingEverything_KeepsNothingFloat()
    {
        OnnxModel model = SkewedMlp();
        BudgetResult result = Int8PerTensor("cosine=0.5").Quantize(model, Samples(model, 2));
        result.BudgetMet.ShouldBeTrue();
        result.Quantized.ShouldBe(["fc1", "fc2"], ignoreOrder: true);
        result.KeptFloat.ShouldBeEmpty();
        result.NodeErrors.ShouldBeEmpty();
    }

    [Fact]
    public void Cosine_FallsBack_KeepingExactlyTheSensitiveNodeFloat()
    {
        OnnxModel model = SkewedMlp();
        var samples = Samples(model, 3);
        BudgetResult result = Int8PerTensor("cosine>=0.9999").Quantize(model, samples);

        result.BudgetMet.ShouldBeTrue();
        result.KeptFloat.ShouldBe(["fc1"]);
        result.Quantized.ShouldBe(["fc2"]);
        result.NodeErrors["fc1"].Cosine.ShouldBeLessThan(result.NodeErrors["fc2"].Cosine);
        result.Model.Proto.Graph.Node.Where(n => n.OpType == "MatMul").Select(n => n.Name).ShouldBe(["fc1"]);
        AccuracyMeasure check = Check(model, result.Model, samples);
        check.Cosine.ShouldBeGreaterThanOrEqualTo(0.9999);
        check.ShouldBe(result.Accuracy);
        OnnxModel all = model.Clone();
        new DynamicInt8Quantizer().Apply(all);
        Check(model, all, samples).Cosine.ShouldBeLessThan(0.9999, "the test needs a model that misses the budget when fully quantized");
    }

    [Fact]
    public void MaxAbs_FallsBack_KeepingExactlyTheSensitiveNodeFloat()
    {
        OnnxModel model = SkewedMlp();
        var samples = Samples(model, 3);
        BudgetResult probe = Int8PerTensor("maxabs<=0").Quantize(model, samples);
        double fc1 = probe.NodeErrors["fc1"].MaxAbs, fc2 = probe.NodeErrors["fc2"].MaxAbs;
        fc1.ShouldBeGreaterThan(10 * fc2);

        // A bound between the two nodes' own errors (with margin for fc2's error on all samples).
        double bound = Math.Sqrt(fc1 * fc2 * 3);
        BudgetResult result = Int8PerTensor($"maxabs<={bound.ToString(System.Globalization.CultureInfo.InvariantCulture)}").Quantize(model, samples);
        result.BudgetMet.ShouldBeTrue();
        result.KeptFloat.ShouldBe(["fc1"]);
        result.Quantized.ShouldBe(["fc2"]);
        Check(model, result.Model, samples).MaxAbs.ShouldBeLessThanOrEqualTo(bound);
    }

    [Fact]
    public void NoQuantizedModelWithinBudget_KeepsTheFloatModel_AndSaysWhatItTried()
    {
        OnnxModel model = SkewedMlp();
        BudgetResult result = Int8PerTensor("maxabs<=0").Quantize(model, Samples(model, 2));
        result.Quantized.ShouldBeEmpty();
        result.KeptFloat.ShouldBe(["fc1", "fc2"]);
        result.Accuracy.ShouldBe(AccuracyMeasure.Exact);
        result.Model.Proto.Graph.Node.Count(n => n.OpType == "MatMul").ShouldBe(2);
        result.Model.Proto.Graph.Node.ShouldNotContain(n => n.OpType == "MatMulInteger");
    }

    [Fact]
    public void UnmeetableBudget_SaysSo_AndKeepsTheFloatModel()
    {
        OnnxModel model = SkewedMlp();
        BudgetResult result = new AccuracyBudget([new AccuracyBudgetSpec(AccuracyMetric.Cosine, 1.5)], exclude => new DynamicInt8Quantizer { Exclude = exclude })
            .Quantize(model, Samples(model, 1));
        result.BudgetMet.ShouldBeFalse();
        result.Quantized.ShouldBeEmpty();
        result.Model.Proto.Graph.Node.Count(n => n.OpType == "MatMul").ShouldBe(2);
    }

    /// <summary>
    /// A stand-in for any other quantizer: rounds every MatMul weight to a multiple of <see cref="Step"/> (still float),
    /// so a layer with small weights loses them.
    /// </summary>
    private sealed class RoundingQuantizer : IQuantizer
    {
        public string Name => "round";

        public float Step { get; init; } = 0.25f;

        public ISet<string> Exclude { get; init; } = new HashSet<string>();

        public List<string> Apply(OnnxModel model)
        {
            var weights = model.Proto.Graph.Initializer.ToDictionary(i => i.Name);
            var done = new List<string>();
            foreach (NodeProto node in model.Proto.Graph.Node.Where(n => n.OpType == "MatMul" && !Exclude.Contains(n.Name)))
            {
                TensorProto w = weights[node.Input[1]];
                float[] values = [.. FloatTensor.Read(w).Select(v => MathF.Round(v / Step) * Step)];
                w.FloatData.Clear();
                w.RawData = ByteString.CopyFrom([.. values.SelectMany(BitConverter.GetBytes)]);
                done.Add(node.Name);
            }
            return done;
        }
    }

    /// <summary>A chain of 12 residual layers x + tanh(x·Wi) with weights in {−0.5, 0, 0.5} (on the rounding grid) except layer 7's, ±0.12, which round to 0.</summary>
    private static OnnxModel DeepChain()
    {
        var builder = new GraphBuilder().Input("x", 8, 16).Output("y", 8, 16);
        string current = "x";
        for (int i = 0; i < 12; i++)
        {
            float amplitude = i == 7 ? 0.12f : 0.5f;
            float[] w = [.. Random(16 * 16, 100 + i, 1f).Select(v => MathF.Round(v) * amplitude)];
            string next = i == 11 ? "y" : $"x{i + 1}";
            builder.Initializer($"W{i}", [16, 16], w)
                .Node("MatMul", [current, $"W{i}"], [$"m{i}"], $"layer{i}").Node("Tanh", [$"m{i}"], [$"t{i}"]).Node("Add", [current, $"t{i}"], [next]);
            current = next;
        }
        return builder.Build();
    }

    [Fact]
    public void AnyQuantizer_DrivesTheBudget_AndTheSearchStaysBounded()
    {
        OnnxModel model = DeepChain();
        var samples = Samples(model, 2);
        var budget = new AccuracyBudget([new AccuracyBudgetSpec(AccuracyMetric.Cosine, 0.99999)], exclude => new RoundingQuantizer { Exclude = exclude });
        BudgetResult result = budget.Quantize(model, samples);

        result.BudgetMet.ShouldBeTrue();
        result.KeptFloat.ShouldBe(["layer7"]);
        result.Quantized.Count.ShouldBe(11);
        // All quantized + 12 contributions + a binary search over 12 (4 steps at most).
        result.Evaluations.ShouldBeLessThanOrEqualTo(1 + 12 + 4);
        Check(model, result.Model, samples).Cosine.ShouldBeGreaterThanOrEqualTo(0.99999);
    }

    [Fact]
    public void ModelOptimizer_WithBudgets_ReportsTheNodesKeptFloat_AndTopOneAgreement()
    {
        string folder = Directory.CreateTempSubdirectory("kiln-budget-").FullName;
        try
        {
            string input = Path.Combine(folder, "skewed.onnx"), output = Path.Combine(folder, "int8.onnx");
            SkewedMlp().Save(input);
            var options = new OptimizeOptions
            {
                Quantize = QuantizeMode.DynamicInt8,
                PerChannel = false,
                Budgets = AccuracyBudgetSpec.ParseAll(["cosine>=0.9999,top1>=0.5"]),
                MeasureTime = TimeSpan.FromMilliseconds(20),
            };
            OptimizationReport report = ModelOptimizer.Run(input, output, options);

            report.KeptFloat.ShouldNotBeNull().Select(n => n.Node).ShouldBe(["fc1"]);
            report.KeptFloat[0].Cosine.ShouldBeLessThan(0.9999);
            StepOutcome step = report.Steps.Single(s => s.Step == "int8");
            step.Kept.ShouldBeTrue();
            step.Detail.ShouldContain("1 node(s) quantized, 1 kept float");
            report.Result.Cosine.ShouldBeGreaterThanOrEqualTo(0.9999);
            report.Result.Top1Agreement.ShouldNotBeNull().ShouldBeGreaterThanOrEqualTo(0.5);
            report.Result.Top5Agreement.ShouldNotBeNull();
            report.Baseline.Top1Agreement.ShouldBe(1);
            OnnxModel written = OnnxModel.Load(output);
            written.Proto.Graph.Node.Where(n => n.OpType == "MatMul").Select(n => n.Name).ShouldBe(["fc1"]);
            written.Proto.Graph.Node.Count(n => n.OpType == "MatMulInteger").ShouldBe(1);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ModelOptimizer_LeavesOutGeneratedSamplesTheModelCannotRun()
    {
        // An embedding table of 3 rows: generated ids (0–3) of 3 are out of range for ONNX Runtime's Gather.
        OnnxModel model = new GraphBuilder().Int64Input("ids", 1).Output("y", 1, 4)
            .Initializer("table", [3, 8], Random(3 * 8, 21, 1f)).Initializer("W", [8, 4], Random(8 * 4, 22, 1f))
            .Node("Gather", ["table", "ids"], ["e"], "embed").Node("MatMul", ["e", "W"], ["y"], "fc").Build();
        bool Runs(int seed) => ModelRunner.SampleInputs(model, seed)["ids"].Values.All(v => v < 3);
        Runs(1).ShouldBeTrue("the measuring input must run");
        int usable = 1 + Enumerable.Range(2, 3).Count(Runs);
        usable.ShouldBeLessThan(4, "the test needs a generated sample the model cannot run");

        string folder = Directory.CreateTempSubdirectory("kiln-budget-").FullName;
        try
        {
            string input = Path.Combine(folder, "embed.onnx");
            model.Save(input);
            var options = new OptimizeOptions { Quantize = QuantizeMode.DynamicInt8, Budgets = [new AccuracyBudgetSpec(AccuracyMetric.Cosine, 0.9)], MeasureTime = TimeSpan.FromMilliseconds(20) };
            OptimizationReport report = ModelOptimizer.Run(input, Path.Combine(folder, "int8.onnx"), options);
            report.Steps.Single(s => s.Step == "int8").Detail.ShouldContain($"on {usable} samples");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
