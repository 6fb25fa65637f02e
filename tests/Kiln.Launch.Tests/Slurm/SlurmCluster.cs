using System.Diagnostics;

namespace Kiln.Launch.Tests.Slurm;

/// <summary>
/// A real single-node Slurm (munged, slurmctld and four virtual slurmd nodes) started once for the "Slurm" collection by
/// eng/slurm/start.sh and stopped by eng/slurm/stop.sh at the end, both with this process as a lease holder
/// (<c>KILN_SLURM_LEASE</c>): test runs in parallel share the cluster, and the last one out stops it. Needs root and
/// Debian's slurmctld, slurmd, slurm-client and munge (eng/test.sh installs them); without them the tests fail, they do
/// not skip.
/// </summary>
public sealed class SlurmCluster : IAsyncLifetime
{
    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The folder of the cluster's configuration, state and logs.</summary>
    public string Home { get; } = Environment.GetEnvironmentVariable("KILN_SLURM_HOME") ?? "/tmp/kiln-slurm";

    /// <summary>The <c>slurm.conf</c> the scheduler passes to every tool as <c>SLURM_CONF</c>.</summary>
    public string SlurmConf { get; private set; } = "";

    /// <summary>A job folder for this test run, removed at the end.</summary>
    public string JobRoot { get; } = Path.Combine(Path.GetTempPath(), "kiln-slurm-tests-" + Guid.NewGuid().ToString("N")[..8]);

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(JobRoot);
        (int code, string output) = await RunAsync("start.sh");
        if (code != 0)
        {
            throw new InvalidOperationException($"eng/slurm/start.sh failed ({code}):\n{output}");
        }
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        SlurmConf = lines.Last(l => l.StartsWith("SLURM_CONF=", StringComparison.Ordinal))["SLURM_CONF=".Length..];
    }

    public async Task DisposeAsync()
    {
        await RunAsync("stop.sh");
        try
        {
            Directory.Delete(JobRoot, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>A fresh job folder for one test.</summary>
    public string NewJobDir(string name)
    {
        string dir = Path.Combine(JobRoot, name);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Runs <c>scontrol ARGS</c> against the test cluster.</summary>
    public async Task ScontrolAsync(IEnumerable<string> arguments, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo("scontrol") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        start.Environment["SLURM_CONF"] = SlurmConf;
        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        Task<string> stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"scontrol {string.Join(' ', start.ArgumentList)} failed: {await stdout}{await stderr}");
        }
    }

    private async Task<(int Code, string Output)> RunAsync(string script)
    {
        var start = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(RepositoryRoot(), "eng", "slurm", script));
        start.ArgumentList.Add(Home);
        start.Environment["KILN_SLURM_LEASE"] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(s_startTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"eng/slurm/{script} did not finish within {s_startTimeout.TotalSeconds} s");
        }
        return (process.ExitCode, await stdout + await stderr);
    }

    private static string RepositoryRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Kiln.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("Kiln.slnx not found above " + AppContext.BaseDirectory);
    }
}

[CollectionDefinition(Name)]
public sealed class SlurmClusterGroup : ICollectionFixture<SlurmCluster>
{
    public const string Name = "Slurm";
}
