namespace Kiln.Cli.Tests;

/// <summary>The verbs, run in this process with the output captured.</summary>
public sealed class KilnCommandLineTests
{
    [Fact]
    public async Task Version_PrintsKilnsVersion()
    {
        (int code, string output, _) = await RunAsync("--version");

        code.ShouldBe(0);
        output.Trim().ShouldStartWith("0.1.0");
    }

    [Fact]
    public async Task Help_ListsEveryVerb()
    {
        (int code, string output, _) = await RunAsync("--help");

        code.ShouldBe(0);
        output.ShouldContain("doctor");
        output.ShouldContain("Show what this host offers Kiln");
    }

    [Fact]
    public async Task Doctor_PrintsOneFactPerLine_AndSucceeds()
    {
        (int code, string output, string error) = await RunAsync("doctor");

        code.ShouldBe(0, error);
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.ShouldAllBe(line => line.Contains(": "));
        lines.ShouldContain(line => line.StartsWith("libtorch: 2.10.0, CPU build, bundled (", StringComparison.Ordinal));
        lines.ShouldContain(line => line.StartsWith("onnxruntime: 1.31.1", StringComparison.Ordinal));
        lines.ShouldContain(line => line.StartsWith("mpi: Open MPI v4.1", StringComparison.Ordinal));
        lines.ShouldContain("nccl: not found (libnccl.so.2 is not on the loader path)");
    }

    [Fact]
    public async Task Doctor_WithGemm_PrintsThroughputOfTheCpu()
    {
        (int code, string output, string error) = await RunAsync("doctor", "--gemm", "0.05", "--gemm-size", "64");

        code.ShouldBe(0, error);
        output.ShouldContain("gemm: timing cpu for 0.05 s");
        output.ShouldMatch(@"gemm: cpu float32 64x64: [0-9.]+ GFLOP/s \([0-9]+ multiplies in [0-9.]+ s\)");
    }

    [Theory]
    [InlineData("--gemm", "0", "--gemm must be between 0 and 3600 seconds.")]
    [InlineData("--gemm-size", "8", "--gemm-size must be between 16 and 65536.")]
    [InlineData("--gemm", "soon", "soon")]
    public async Task Doctor_BadOption_FailsWithTheReason(string option, string value, string message)
    {
        (int code, _, string error) = await RunAsync("doctor", option, value);

        code.ShouldBe(2);
        error.ShouldContain(message);
    }

    [Fact]
    public async Task MissingArgument_IsAUsageErrorWithExitCode2()
    {
        (int code, _, string error) = await RunAsync("status");

        code.ShouldBe(2);
        error.ShouldNotBeNullOrWhiteSpace();
    }

    [Fact]
    public async Task UnknownVerb_FailsAndNamesIt()
    {
        (int code, _, string error) = await RunAsync("bake");

        code.ShouldBe(2);
        error.ShouldContain("bake");
    }

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }
}
