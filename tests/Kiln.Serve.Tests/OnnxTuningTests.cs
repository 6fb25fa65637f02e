using Kiln.Runtime;
using Kiln.Serve.Archives;
using Kiln.Serve.Inference;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Serve.Tests;

/// <summary>A <c>MODEL.onnx.tuning.json</c> beside a model (from <c>kiln optimize --autotune</c>) sets the ONNX Runtime session it is served with.</summary>
public sealed class OnnxTuningTests
{
    private static readonly float[] s_x = [1f, 2f, 3f, 4f, -1f, 0.5f, 0f, 2f];

    private static OnnxTuning Tuning(string provider = "CPUExecutionProvider") => new()
    {
        Model = "linear.onnx",
        ExecutionProvider = provider,
        OptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC,
        IntraOpThreads = 2,
        InterOpThreads = 2,
        ParallelExecution = true,
        P50Ms = 0.012,
        P99Ms = 0.05,
        Machine = new OnnxTuningMachine("Test CPU", 2, "1.31.1"),
    };

    /// <summary>The tiny linear model with a tuning file (or other text) beside it, packed as a .mar in the store.</summary>
    private static async Task<string> ArchiveAsync(ServerHarness harness, string name, Action<string> tuningWriter)
    {
        string folder = Path.Combine(harness.Store, "src-" + name);
        Directory.CreateDirectory(folder);
        string model = Path.Combine(folder, "linear.onnx");
        await File.WriteAllBytesAsync(model, TinyOnnx.Linear(1f));
        string tuning = OnnxTuning.PathFor(model);
        tuningWriter(tuning);
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", "linear.onnx", "tensor"));
        builder.AddFile(model).AddFile(tuning);
        await builder.WriteAsync(Path.Combine(harness.Store, name + ".mar"));
        return name + ".mar";
    }

    [Fact]
    public async Task TuningFileInTheArchive_SetsTheSession_AndTheModelStillServes()
    {
        using var logs = new CapturingLoggerFactory();
        await using (ServerHarness harness = await ServerHarness.StartAsync(loggerFactory: logs))
        {
            await harness.RegisterAsync(await ArchiveAsync(harness, "tuned", path => Tuning().Save(path)));
            float[] y = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/tuned", s_x);
            y.ShouldBe(TinyOnnx.Expected(s_x, 1f), tolerance: 1e-5f);
        }
        string applied = logs.Events.Single(e => e.Id == 210 && e.Level == LogLevel.Information).Message;
        applied.ShouldContain("linear.onnx.tuning.json");
        applied.ShouldContain("CPUExecutionProvider, optimization basic, 2 intra-op / 2 inter-op thread(s), parallel");
        applied.ShouldContain("Test CPU");
        logs.Events.ShouldNotContain(e => e.Id == 211);
    }

    [Fact]
    public async Task WithoutATuningFile_NothingIsApplied()
    {
        using var logs = new CapturingLoggerFactory();
        await using (ServerHarness harness = await ServerHarness.StartAsync(loggerFactory: logs))
        {
            await harness.RegisterAsync(await harness.LinearArchiveAsync("plain"));
            await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/plain", s_x);
        }
        logs.Events.ShouldNotContain(e => e.Id == 210 || e.Id == 211);
    }

    [Fact]
    public async Task AProviderThisBuildLacks_IsAWarning_AndTheServerFallsBack()
    {
        using var logs = new CapturingLoggerFactory();
        await using (ServerHarness harness = await ServerHarness.StartAsync(loggerFactory: logs))
        {
            await harness.RegisterAsync(await ArchiveAsync(harness, "elsewhere", path => Tuning("NoSuchExecutionProvider").Save(path)));
            float[] y = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/elsewhere", s_x);
            y.ShouldBe(TinyOnnx.Expected(s_x, 1f), tolerance: 1e-5f);
        }
        string warning = logs.Events.Single(e => e.Id == 211).Message;
        warning.ShouldContain("NoSuchExecutionProvider");
        warning.ShouldContain("CPUExecutionProvider");
        logs.Events.Single(e => e.Id == 210).Message.ShouldContain("2 intra-op / 2 inter-op thread(s), parallel");
    }

    [Fact]
    public async Task AnInvalidTuningFile_RefusesTheModel_NamingTheFile()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "broken", path => File.WriteAllText(path, "{\"format\": \"kiln.onnx-tuning/1\"}"));
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={mar}&synchronous=true&initial_workers=1", null);
        var error = await ServerHarness.ShouldBeErrorAsync(response, 400, "ModelException");
        error.GetProperty("message").GetString()!.ShouldContain("linear.onnx.tuning.json");
    }

    [Fact]
    public void SessionSettings_ComeFromTheTuningFile_ButDeviceTypeCpuKeepsTheCpu()
    {
        string folder = Directory.CreateTempSubdirectory("kiln-tuning-").FullName;
        try
        {
            string model = Path.Combine(folder, "linear.onnx");
            File.WriteAllBytes(model, TinyOnnx.Linear(1f));
            (OnnxSessionOptions plain, _) = new BackendOptions { IntraOpThreads = 1 }.OnnxSession(model);
            (plain.IntraOpThreads, plain.InterOpThreads, plain.ParallelExecution, plain.OptimizationLevel).ShouldBe((1, 0, false, GraphOptimizationLevel.ORT_ENABLE_ALL));

            Tuning("CUDAExecutionProvider").Save(OnnxTuning.PathFor(model));
            (OnnxSessionOptions tuned, bool onGpu) = new BackendOptions { IntraOpThreads = 1, DeviceType = "cpu" }.OnnxSession(model);
            (tuned.IntraOpThreads, tuned.InterOpThreads, tuned.ParallelExecution, tuned.OptimizationLevel).ShouldBe((2, 2, true, GraphOptimizationLevel.ORT_ENABLE_BASIC));
            tuned.Provider.ShouldBe(OnnxProvider.Cpu);
            onGpu.ShouldBeFalse();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
