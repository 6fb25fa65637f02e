using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Kiln.Distributed.Tests;

/// <summary>
/// The data-parallel samples (samples/distributed) trained for a short while on 2 CPU ranks through the real CLI:
/// <c>kiln run -s local --wait --log dist.ddp -j 1x2 --launcher mpirun --script SAMPLE.dll -- …</c>.
/// </summary>
public sealed class SampleTests : IDisposable
{
    /// <summary>Where eng/test.sh puts scikit-learn's digits.csv.gz (taken out of Debian's python3-sklearn package).</summary>
    public const string DigitsVariable = "KILN_DIGITS_CSV";

    private readonly string _root = Directory.CreateTempSubdirectory("kiln-samples-").FullName;

    [Fact]
    public async Task DigitsCnn_TwoRanks_LearnsAndEndsWithIdenticalReplicas()
    {
        string data = Environment.GetEnvironmentVariable(DigitsVariable) ?? "";
        File.Exists(data).ShouldBeTrue(
            $"{DigitsVariable} must name scikit-learn's digits.csv.gz (now: '{data}'). eng/test.sh fetches it; by hand: " +
            "apt-get download python3-sklearn && dpkg-deb --fsys-tarfile python3-sklearn_*.deb | tar -x -O " +
            "./usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz > digits.csv.gz");

        Run run = await RunSampleAsync("Kiln.Samples.DigitsCnn", "--data", data, "--epochs", "6");

        JsonNode summary = run.Summary();
        summary["world_size"]!.GetValue<int>().ShouldBe(2, run.ToString());
        summary["final_loss"]!.GetValue<double>().ShouldBeLessThan(summary["first_loss"]!.GetValue<double>() * 0.5, run.ToString());
        summary["test_accuracy"]!.GetValue<double>().ShouldBeGreaterThanOrEqualTo(0.9, run.ToString());
        run.ShouldHaveEqualChecksums();
    }

    [Fact]
    public async Task TinyLm_TwoRanks_LossFallsAndReplicasStayIdentical()
    {
        Run run = await RunSampleAsync(
            "Kiln.Samples.TinyLm",
            "--layers", "1", "--d-model", "64", "--heads", "2", "--seq", "32", "--batch", "8",
            "--steps", "40", "--warmup-steps", "5", "--log-every", "10", "--lr", "0.003");

        JsonNode summary = run.Summary();
        summary["world_size"]!.GetValue<int>().ShouldBe(2, run.ToString());
        summary["steps"]!.GetValue<int>().ShouldBe(40);
        summary["steps_per_s"]!.GetValue<double>().ShouldBeGreaterThan(0);
        summary["tokens_per_s"]!.GetValue<double>().ShouldBe(summary["steps_per_s"]!.GetValue<double>() * 8 * 32 * 2, 0.5);
        summary["final_loss"]!.GetValue<double>().ShouldBeLessThan(summary["first_loss"]!.GetValue<double>() - 0.8, run.ToString());
        run.ShouldHaveEqualChecksums();
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private static string ProgramPath(string assemblyName)
    {
        string file = Path.Combine(AppContext.BaseDirectory, "sample-paths.txt");
        string path = File.ReadAllLines(file).Select(l => l.Trim()).SingleOrDefault(l => Path.GetFileNameWithoutExtension(l) == assemblyName) ?? "";
        File.Exists(path).ShouldBeTrue($"{assemblyName} is not built (looked in {file})");
        return path;
    }

    /// <summary>Runs the sample on 2 ranks under kiln (inline supervision, so the job dies with it on a timeout).</summary>
    private async Task<Run> RunSampleAsync(string sample, params string[] sampleArgs)
    {
        string kiln = Path.ChangeExtension(ProgramPath("kiln"), null);
        var start = new ProcessStartInfo(kiln)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = _root,
        };
        string[] args = ["run", "-s", "local", "-cfg", "supervise=inline", "--wait", "--log", "dist.ddp", "-j", "1x2", "--launcher", "mpirun", "--script", ProgramPath(sample), "--", .. sampleArgs];
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        start.Environment["KILN_STATE_DIR"] = Path.Combine(_root, "state");
        // An empty .kilnconfig: no defaults of this machine's ~/.kilnconfig.
        string config = Path.Combine(_root, "kilnconfig");
        File.WriteAllText(config, "");
        start.Environment["KILNCONFIG"] = config;
        foreach (string variable in (string[])["RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS"])
        {
            start.Environment.Remove(variable);
        }

        using var process = new Process { StartInfo = start };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        var clock = Stopwatch.StartNew();
        process.Start().ShouldBeTrue();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            // Only the kiln this test started, and the supervisor, agent, mpirun and ranks under it.
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"kiln run {string.Join(' ', args)} ran over 120 s and was killed.\n{stdout}\n{stderr}");
        }
        process.WaitForExit();
        Run run;
        lock (stdout)
        {
            lock (stderr)
            {
                run = new Run(process.ExitCode, stdout.ToString(), stderr.ToString(), clock.Elapsed);
            }
        }
        run.ExitCode.ShouldBe(0, run.ToString());
        return run;
    }

    private sealed record Run(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
    {
        /// <summary>The ranks' output lines, without the <c>trainer/0 </c> prefix that <c>--log</c> adds.</summary>
        private IEnumerable<string> Lines => Stdout.Split('\n').Select(l => l.TrimEnd('\r')).Select(l => l.StartsWith("trainer/0 ", StringComparison.Ordinal) ? l["trainer/0 ".Length..] : l);

        public JsonNode Summary()
        {
            string line = Lines.LastOrDefault(l => l.StartsWith("{\"", StringComparison.Ordinal)) ?? "";
            line.ShouldNotBeEmpty($"no JSON summary line\n{this}");
            return JsonNode.Parse(line)!;
        }

        public void ShouldHaveEqualChecksums()
        {
            var checksums = Lines.Where(l => l.StartsWith("checksum rank=", StringComparison.Ordinal))
                .ToDictionary(l => l.Split(' ')[1], l => string.Join(' ', l.Split(' ').Skip(2)));
            string.Join(",", checksums.Keys.Order(StringComparer.Ordinal)).ShouldBe("rank=0,rank=1", this.ToString());
            checksums["rank=1"].ShouldBe(checksums["rank=0"], this.ToString());
        }

        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"exit {ExitCode} after {Elapsed.TotalSeconds:F1} s\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}");
    }
}
