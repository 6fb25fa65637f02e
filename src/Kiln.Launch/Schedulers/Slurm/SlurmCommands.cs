using System.Diagnostics;
using System.Text;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>What a Slurm client command printed and returned.</summary>
internal readonly record struct CommandResult(int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>The first line of stderr (or stdout), for messages.</summary>
    public string FirstErrorLine
    {
        get
        {
            string text = string.IsNullOrWhiteSpace(Stderr) ? Stdout : Stderr;
            return text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? $"exit code {ExitCode}";
        }
    }
}

/// <summary>
/// Runs Slurm's client tools (sbatch, squeue, sacct, scancel, scontrol) as child processes with an argument list, never
/// through a shell, with <c>SLURM_CONF</c> set when the scheduler was given one, and a time limit per call.
/// </summary>
internal sealed class SlurmCommands
{
    /// <summary>How long one client call may take before it counts as a cluster that does not answer.</summary>
    public static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);

    private readonly string? _slurmConf;
    private readonly Func<string, string?> _which;

    /// <param name="slurmConf">The <c>slurm.conf</c> for every call (<c>SLURM_CONF</c>); null: the environment's.</param>
    /// <param name="which">Finds a tool on PATH; null: search <c>PATH</c>.</param>
    public SlurmCommands(string? slurmConf, Func<string, string?>? which)
    {
        _slurmConf = slurmConf;
        _which = which ?? FindOnPath;
    }

    /// <summary>The <c>SLURM_CONF</c> passed to every tool, or null for the environment's.</summary>
    public string? SlurmConf => _slurmConf;

    /// <summary>Throws when sbatch or squeue is missing.</summary>
    /// <exception cref="LaunchException">A tool is not on PATH.</exception>
    public void EnsureTools()
    {
        if (_which("sbatch") is null || _which("squeue") is null)
        {
            throw new LaunchException("slurm scheduler needs sbatch/squeue on PATH (install slurm-client)");
        }
    }

    /// <summary>True when the tool is on PATH.</summary>
    public bool Has(string tool) => _which(tool) is not null;

    /// <summary>Runs a tool and collects its output.</summary>
    /// <exception cref="LaunchException">The tool is missing or did not finish within <see cref="CallTimeout"/>.</exception>
    public async Task<CommandResult> RunAsync(string tool, IEnumerable<string> arguments, CancellationToken cancellationToken, string? workingDirectory = null)
    {
        string path = _which(tool) ?? throw new LaunchException($"slurm scheduler needs {tool} on PATH (install slurm-client)");
        var start = new ProcessStartInfo(path)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        if (workingDirectory is not null)
        {
            start.WorkingDirectory = workingDirectory;
        }
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        if (_slurmConf is not null)
        {
            start.Environment["SLURM_CONF"] = _slurmConf;
        }

        using var process = new Process { StartInfo = start };
        process.Start();
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        Task<string> stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(CallTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            return new CommandResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It ended meanwhile.
            }
            cancellationToken.ThrowIfCancellationRequested();
            throw new LaunchException($"{tool} did not answer within {CallTimeout.TotalSeconds:0} s; is slurmctld up (SLURM_CONF={_slurmConf ?? Environment.GetEnvironmentVariable("SLURM_CONF") ?? "default"})?");
        }
    }

    private static string? FindOnPath(string tool)
    {
        string? path = Environment.GetEnvironmentVariable("PATH");
        if (string.IsNullOrEmpty(path))
        {
            return null;
        }
        foreach (string folder in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(folder, tool);
            if (File.Exists(candidate) && (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0)
            {
                return candidate;
            }
        }
        return null;
    }
}
