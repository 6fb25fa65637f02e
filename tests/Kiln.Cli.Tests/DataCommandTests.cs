namespace Kiln.Cli.Tests;

/// <summary><c>kiln data</c> on the sample spec in samples/data.</summary>
public sealed class DataCommandTests : IDisposable
{
    private static readonly string s_root = FindRoot();
    private static readonly string s_sample = Path.Combine(s_root, "samples", "data", "text-buckets.json");
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-cli-data-").FullName;
    private readonly string _previous = Environment.CurrentDirectory;

    public DataCommandTests() => Environment.CurrentDirectory = s_root;

    [Fact]
    public async Task Describe_PrintsTheNodesAndItemType()
    {
        (int code, string output, string error) = await RunAsync("data", "describe", s_sample);

        code.ShouldBe(0, error);
        output.ShouldContain("batches  bucket_batch  [shuffle]");
        output.ShouldContain("tokens   tokenize      [text]");
        output.ShouldContain("yields TensorBatch");
    }

    [Fact]
    public async Task Run_StoppedAndResumed_WritesTheSameLinesAsOneRun()
    {
        string state = Path.Combine(_dir, "state.json");
        (int code, string whole, _) = await RunAsync("data", "run", s_sample, "--seed", "9", "--take", "6");
        (int first, string head, _) = await RunAsync("data", "run", s_sample, "--seed", "9", "--take", "2", "--state-out", state);
        (int second, string tail, string error) = await RunAsync("data", "run", s_sample, "--seed", "9", "--take", "4", "--resume", state);

        (code, first, second).ShouldBe((0, 0, 0), error);
        Lines(whole).Length.ShouldBe(6);
        Lines(head).Concat(Lines(tail)).ShouldBe(Lines(whole));
    }

    [Fact]
    public async Task Run_ResumeWithAnotherSeed_FailsWithTheReason()
    {
        string state = Path.Combine(_dir, "state.json");
        await RunAsync("data", "run", s_sample, "--seed", "1", "--take", "1", "--state-out", state);

        (int code, _, string error) = await RunAsync("data", "run", s_sample, "--seed", "2", "--resume", state);

        code.ShouldBe(1);
        error.ShouldContain("seed");
    }

    [Fact]
    public async Task BadSpec_ExitsNonZeroListingEveryProblem()
    {
        string bad = Path.Combine(_dir, "bad.json");
        await File.WriteAllTextAsync(bad, """
            { "version": 1, "output": "b", "nodes": [
              { "id": "a", "type": "range", "params": { "count": "ten" } },
              { "id": "b", "type": "batch", "inputs": ["a"], "params": { "size": 0 } } ] }
            """);

        (int code, _, string error) = await RunAsync("data", "run", bad);

        code.ShouldBe(1);
        error.ShouldContain($"{bad}: ");
        error.ShouldContain("node 'a': parameter \"count\" is \"ten\"; it must be an integer");
    }

    [Fact]
    public async Task Bench_PrintsRateAndOneRowPerNode()
    {
        (int code, string output, string error) = await RunAsync("data", "bench", s_sample, "--seconds", "5");

        code.ShouldBe(0, error);
        output.ShouldMatch(@"^\d+ items in [0-9.]+ s: [0-9.]+ items/s, [0-9.]+ MB/s read");
        string[] rows = Lines(output);
        rows.Count(r => r.StartsWith("records ", StringComparison.Ordinal) && r.Contains(" 120 ", StringComparison.Ordinal)).ShouldBe(1);
        rows.Length.ShouldBe(2 + 8);
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }

    private static string FindRoot()
    {
        string? dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "Kiln.slnx")))
        {
            dir = Path.GetDirectoryName(dir);
        }
        return dir ?? throw new InvalidOperationException("Kiln.slnx not found above the test folder");
    }

    public void Dispose()
    {
        Environment.CurrentDirectory = _previous;
        Directory.Delete(_dir, recursive: true);
    }
}
