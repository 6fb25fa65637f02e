using System.Diagnostics;
using System.Text;

namespace Kiln.Distributed.Tests;

/// <summary>Starts the worker under mpirun, bounded by a timeout that kills mpirun's process tree.</summary>
internal static class MpiRun
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public int OkLines => Stdout.Split('\n').Count(l => l.Contains("OK rank ", StringComparison.Ordinal));

        /// <summary>From starting mpirun to its exit.</summary>
        public TimeSpan Elapsed { get; init; }

        /// <summary>When mpirun's exit was seen.</summary>
        public DateTimeOffset ExitedAt { get; init; }

        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    public static string WorkerPath
    {
        get
        {
            string file = Path.Combine(AppContext.BaseDirectory, "worker-path.txt");
            string path = File.ReadAllText(file).Trim();
            File.Exists(path).ShouldBeTrue($"the worker {path} (from {file}) is not built");
            return path;
        }
    }

    /// <summary>Runs the worker under mpirun with <paramref name="ranks"/> ranks, or on its own (no mpirun) when 0.</summary>
    public static async Task<Result> RunAsync(int ranks, IEnumerable<string> workerArgs, IEnumerable<string>? mpirunArgs = null, int timeoutSeconds = 60)
    {
        string host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } h ? h : "dotnet";
        var start = new ProcessStartInfo(ranks == 0 ? host : "mpirun")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (ranks > 0)
        {
            foreach (string a in (string[])["--allow-run-as-root", "--oversubscribe", "-n", ranks.ToString(System.Globalization.CultureInfo.InvariantCulture)])
            {
                start.ArgumentList.Add(a);
            }
            foreach (string a in mpirunArgs ?? [])
            {
                start.ArgumentList.Add(a);
            }
            start.ArgumentList.Add(host);
        }
        start.ArgumentList.Add(WorkerPath);
        foreach (string a in workerArgs)
        {
            start.ArgumentList.Add(a);
        }
        // The worker must not inherit a launcher's world from the test host.
        start.Environment.Remove("RANK");
        start.Environment.Remove("WORLD_SIZE");

        using var process = new Process { StartInfo = start };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        var clock = System.Diagnostics.Stopwatch.StartNew();
        process.Start().ShouldBeTrue();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            // Only the mpirun this call started, and the ranks under it.
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"mpirun -n {ranks} {string.Join(' ', workerArgs)} ran over {timeoutSeconds} s and was killed.\n{stdout}\n{stderr}");
        }
        TimeSpan elapsed = clock.Elapsed;
        DateTimeOffset exitedAt = DateTimeOffset.UtcNow;
        process.WaitForExit();
        lock (stdout)
        {
            lock (stderr)
            {
                return new Result(process.ExitCode, stdout.ToString(), stderr.ToString()) { Elapsed = elapsed, ExitedAt = exitedAt };
            }
        }
    }
}
