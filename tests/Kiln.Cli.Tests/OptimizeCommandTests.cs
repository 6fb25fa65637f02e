using System.Text.Json;

namespace Kiln.Cli.Tests;

/// <summary><c>kiln optimize</c> on a real model shipped in a NuGet package (ResNet-18's preprocessing graph).</summary>
public sealed class OptimizeCommandTests : IDisposable
{
    private static readonly string PreprocessOnnx = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNetPrepOnnx", "ResNetPreprocess.onnx");
    private readonly string _folder = Directory.CreateTempSubdirectory("kiln-optimize-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Optimize_WritesTheModel_TheTable_AndTheJsonReport()
    {
        string result = Path.Combine(_folder, "out.onnx");
        string report = Path.Combine(_folder, "report.json");
        (int code, string output, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--report", report, "--measure-seconds", "0.2");
        code.ShouldBe(0, error);
        output.ShouldContain("p50 batch 1");
        output.ShouldContain("cosine");
        output.ShouldContain("kept         dead-node-elimination");
        output.ShouldContain($"wrote {result}");
        error.ShouldContain("optimize: measuring");
        Kiln.Optimize.OnnxModel.Load(result).NodeCount.ShouldBeGreaterThan(0);
        using JsonDocument json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
        JsonElement resultFigures = json.RootElement.GetProperty("result");
        resultFigures.GetProperty("cosine").GetDouble().ShouldBeGreaterThan(0.99999);
        resultFigures.GetProperty("p50_batch1_ms").GetDouble().ShouldBeGreaterThan(0);
        // Each pass once (its first round; later rounds only when they changed something).
        json.RootElement.GetProperty("steps").EnumerateArray().Select(s => s.GetProperty("step").GetString()).Distinct().ShouldBe(
            ["constant-folding", "if-elimination", "identity-elimination", "gelu-fusion", "concat-split-elimination", "matmul-add-to-gemm", "conv-batchnorm-folding", "dead-node-elimination"]);
    }

    [Fact]
    public async Task Int8_OnAnOpset8Model_IsRefused_NamingTheOpset()
    {
        string result = Path.Combine(_folder, "int8.onnx");
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--quantize", "int8", "--measure-seconds", "0.1");
        code.ShouldBe(1);
        error.ShouldContain("opset 8");
        File.Exists(result).ShouldBeFalse();
    }

    [Fact]
    public async Task ReportOnly_ChangesNothing_AndNeedsNoOutput()
    {
        (int code, string output, string error) = await RunAsync("optimize", "--report-only", PreprocessOnnx, "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain("nodes");
        output.ShouldNotContain("wrote");
    }

    [Fact]
    public async Task NotAnOnnxFile_ExitsOne_NamingIt()
    {
        string notes = Path.Combine(_folder, "notes.onnx");
        await File.WriteAllTextAsync(notes, "hello");
        (int code, _, string error) = await RunAsync("optimize", notes, "-o", Path.Combine(_folder, "x.onnx"));
        code.ShouldBe(1);
        error.ShouldContain(notes);
        error.ShouldContain("not an ONNX model");
    }

    [Theory]
    [InlineData("--budget", "top1=0.99")]
    [InlineData("--quantize", "int3")]
    public async Task BadFlags_ExitTwo(string flag, string value)
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", Path.Combine(_folder, "x.onnx"), flag, value);
        code.ShouldBe(2);
        error.ShouldNotBeEmpty();
    }

    [Fact]
    public async Task NoOutput_WithoutReportOnly_IsAnError()
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx);
        code.ShouldBe(1);
        error.ShouldContain("-o OUT.onnx");
    }
}
