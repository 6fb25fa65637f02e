using Kiln.Optimize.Quantization;
using Kiln.Optimize.Tuning;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Tests;

public sealed class RuntimeTunerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-tune-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static float[] Random(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1))];
    }

    private string SaveMlp(string name, bool int8 = false)
    {
        OnnxModel model = new GraphBuilder().Input("x", 8, 64).Output("y", 8, 16)
            .Initializer("W1", [64, 64], Random(64 * 64, 1)).Initializer("W2", [64, 16], Random(64 * 16, 2))
            .Node("MatMul", ["x", "W1"], ["h"], "fc1").Node("Relu", ["h"], ["r"]).Node("MatMul", ["r", "W2"], ["y"], "fc2").Build();
        if (int8)
        {
            new DynamicInt8Quantizer().Apply(model);
        }
        string path = Path.Combine(_dir, name);
        model.Save(path);
        return path;
    }

    private static readonly RuntimeTunerOptions Quick = new() { TimePerConfig = TimeSpan.FromMilliseconds(5), IntraOpThreads = [1, 2] };

    private static int ProvidersHere => OnnxSessionFactory.AvailableProviders.Count(p => p is "CPUExecutionProvider" or "CUDAExecutionProvider");

    [Fact]
    public void Tune_MeasuresTheWholeSpace_PicksTheFastest_AndWritesAFileThatReadsBack()
    {
        string model = SaveMlp("mlp.onnx");
        var lines = new List<string>();
        TuningReport report = RuntimeTuner.Tune([new TuningVariant(model, "fp32")], Quick, new SyncProgress(lines));

        // Providers × 3 levels × 2 thread counts × (sequential, parallel with 1 and 2 inter-op threads).
        report.Measurements.Count.ShouldBe(ProvidersHere * 3 * 2 * 3);
        lines.Count.ShouldBe(report.Measurements.Count);
        report.Measurements.ShouldAllBe(m => m.Error == null && m.Runs >= 1 && m.P50Ms > 0 && m.P99Ms >= m.P50Ms);
        report.Measurements.Select(m => (m.OptimizationLevel, m.IntraOpThreads, m.InterOpThreads, m.ExecutionMode)).Distinct().Count().ShouldBe(18);

        OnnxTuning best = report.Best[model];
        // The fastest median; among equal medians the lowest p99.
        double p50 = report.Measurements.Min(m => m.P50Ms);
        TuningMeasurement fastest = report.Measurements.Where(m => m.P50Ms == p50).MinBy(m => m.P99Ms)!;
        TuningMeasurement chosen = report.Measurements.Single(m => (m.Provider, m.OptimizationLevel, m.IntraOpThreads, m.InterOpThreads, m.ExecutionMode)
            == (best.ExecutionProvider, OnnxTuning.LevelName(best.OptimizationLevel), best.IntraOpThreads, best.InterOpThreads, best.ParallelExecution ? "parallel" : "sequential"));
        (chosen.P50Ms, chosen.P99Ms).ShouldBe((fastest.P50Ms, fastest.P99Ms));
        (best.P50Ms, best.P99Ms).ShouldBe((chosen.P50Ms, chosen.P99Ms));
        best.Model.ShouldBe("mlp.onnx");
        best.Machine.Cores.ShouldBe(Environment.ProcessorCount);
        best.Machine.OnnxRuntime.ShouldBe(OnnxSessionFactory.Version);

        string file = OnnxTuning.PathFor(model);
        best.Save(file);
        file.ShouldEndWith("mlp.onnx.tuning.json");
        OnnxTuning.LoadBeside(model).ShouldBe(best);
        string json = File.ReadAllText(file);
        json.ShouldContain("\"execution_provider\"");
        json.ShouldContain("\"graph_optimization_level\"");
        json.ShouldContain("\"intra_op_threads\"");
        // The saved settings open the model.
        using InferenceSession session = OnnxSessionFactory.Open(model, best.ToSessionOptions());
        session.OutputNames.ShouldBe(["y"]);
    }

    [Fact]
    public void Tune_ComparesPrecisions_OneBestPerFile()
    {
        string fp32 = SaveMlp("fp32.onnx"), int8 = SaveMlp("int8.onnx", int8: true);
        var options = new RuntimeTunerOptions { TimePerConfig = TimeSpan.FromMilliseconds(5), IntraOpThreads = [1], TryParallel = false, OptimizationLevels = [GraphOptimizationLevel.ORT_ENABLE_ALL] };
        TuningReport report = RuntimeTuner.Tune([new TuningVariant(fp32, "fp32"), new TuningVariant(int8, "int8")], options);

        report.Measurements.Select(m => m.Precision).Distinct().ShouldBe(["fp32", "int8"]);
        report.Best[int8].Precision.ShouldBe("int8");
        report.Best[fp32].Model.ShouldBe("fp32.onnx");
        report.Fastest.P50Ms.ShouldBe(report.Measurements.Min(m => m.P50Ms));
    }

    [Fact]
    public void Batch_SetsASymbolicFirstDimension_AndTheTuningRecordsWhatRan()
    {
        string fixedPath = SaveMlp("fixed.onnx");
        OnnxModel dynamic = OnnxModel.Load(fixedPath);
        dynamic.Proto.Graph.Input[0].Type.TensorType.Shape.Dim[0] = new Onnx.Proto.TensorShapeProto.Types.Dimension { DimParam = "N" };
        dynamic.Proto.Graph.Output[0].Type.TensorType.Shape.Dim[0] = new Onnx.Proto.TensorShapeProto.Types.Dimension { DimParam = "N" };
        string dynamicPath = Path.Combine(_dir, "dynamic.onnx");
        dynamic.Save(dynamicPath);
        var options = new RuntimeTunerOptions { Batch = 32, TimePerConfig = TimeSpan.FromMilliseconds(5), IntraOpThreads = [1], TryParallel = false, OptimizationLevels = [GraphOptimizationLevel.ORT_ENABLE_ALL] };
        TuningReport report = RuntimeTuner.Tune([new TuningVariant(dynamicPath, "fp32"), new TuningVariant(fixedPath, "fp32")], options);
        report.Best[dynamicPath].Batch.ShouldBe(32);
        report.Best[fixedPath].Batch.ShouldBe(8, "the model declares 8");
    }

    [Fact]
    public void Tune_IsCancellable()
    {
        string model = SaveMlp("mlp.onnx");
        using var cancel = new CancellationTokenSource();
        var progress = new SyncProgress([], () => cancel.Cancel());
        Should.Throw<OperationCanceledException>(() => RuntimeTuner.Tune([new TuningVariant(model, "fp32")], Quick, progress, cancel.Token));
        progress.Lines.Count.ShouldBe(1);
    }

    [Fact]
    public void Load_NamesTheFile_WhenItIsNotATuningFile()
    {
        string model = SaveMlp("mlp.onnx");
        OnnxTuning.LoadBeside(model).ShouldBeNull();
        string file = OnnxTuning.PathFor(model);
        File.WriteAllText(file, "{\"format\": \"kiln.onnx-tuning/1\", \"model\": \"mlp.onnx\"}");
        Should.Throw<KilnRuntimeException>(() => OnnxTuning.LoadBeside(model)).Message.ShouldContain(file);
        File.WriteAllText(file, "not json");
        Should.Throw<KilnRuntimeException>(() => OnnxTuning.Load(file)).Message.ShouldContain(file);
    }

    /// <summary>Progress that records lines on the calling thread (Progress&lt;T&gt; posts them later).</summary>
    private sealed class SyncProgress(List<string> lines, Action? onReport = null) : IProgress<string>
    {
        public List<string> Lines => lines;

        public void Report(string value)
        {
            lines.Add(value);
            onReport?.Invoke();
        }
    }
}
