using System.CommandLine;
using System.Globalization;
using Kiln.Launch;
using Kiln.Launch.Agent;
using Kiln.Launch.Rendezvous;
using Microsoft.Extensions.Logging;

namespace Kiln.Cli.Commands;

/// <summary>
/// <c>kiln agent</c>: torchrun's job, the elastic agent a replica runs, with torchrun's flag names (dashes or
/// underscores). Exit codes: 0 the workers succeeded, 1 the job failed (cause in error.json), 2 bad usage, 143 SIGTERM.
/// The last line on stdout is <c>agent: state=STATE restarts=N exit=CODE</c>. See docs/launch-agent.md.
/// </summary>
internal static class AgentCommand
{
    /// <summary>Exit code for bad flags (an unknown backend, a malformed --nnodes, no entrypoint).</summary>
    public const int UsageExitCode = 2;

    public static Command Create()
    {
        var nnodes = Opt<string>("--nnodes", "Nodes: N or MIN:MAX (elastic).", "1:1");
        var nproc = Opt<string>("--nproc-per-node", "Workers per node: N, cpu, gpu or auto.", "1");
        var backend = Opt<string>("--rdzv-backend", "Rendezvous: c10d (Kiln's store in an agent), static, or etcd.", "static");
        var endpoint = Opt<string?>("--rdzv-endpoint", "HOST[:PORT] of the rendezvous store (c10d default port 29400).", null);
        var runId = Opt<string>("--rdzv-id", "The job's id (TORCHELASTIC_RUN_ID); the same on every node.", "none");
        var conf = Opt<string?>("--rdzv-conf", "key=value,…: join_timeout, last_call_timeout, heartbeat_timeout, exit_barrier_timeout, is_host.", null);
        var standalone = new Option<bool>("--standalone") { Description = "One node with its own store on nothing listening (ignores the rendezvous flags)." };
        var maxRestarts = Opt<int>("--max-restarts", "Whole-group restarts after worker failures, counted for the job (not per node).", 0);
        var monitorInterval = Opt<double>("--monitor-interval", "Seconds between checks of the workers.", 0.1);
        var nodeRank = Opt<int?>("--node-rank", "This node's rank (static backend).", null);
        var masterAddr = Opt<string>("--master-addr", "MASTER_ADDR (static backend).", "127.0.0.1");
        var masterPort = Opt<int>("--master-port", "MASTER_PORT (static backend; its store listens on MASTER_PORT+1).", 29500);
        var localAddr = Opt<string?>("--local-addr", "The address other nodes reach this node at (MASTER_ADDR when it is group rank 0).", null);
        var role = Opt<string>("--role", "ROLE_NAME of the workers.", "default");
        var logDir = Opt<string?>("--log-dir", "Folder for workers' logs (attempt_N/LOCAL_RANK/stdout.log, stderr.log), error.json and agent-state.json.", null);
        var launcher = Opt<string>("--launcher", "How the workers start: process (one process each) or mpirun (one Open MPI mpirun per round, one MPI world; one node only).", AgentOptions.ProcessLauncher);
        var grace = Opt<double>("--stop-grace-period", "Seconds between SIGTERM and SIGKILL when stopping workers (Kiln's addition).", 5);
        var entrypoint = new Argument<string[]>("entrypoint") { Description = "-- PROGRAM ARGS…: what each worker runs (executed directly, as torchrun's --no-python).", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("agent", "The elastic agent a replica runs (torchrun's job): rendezvous, workers with torchrun's environment, restarts.")
        {
            nnodes, nproc, backend, endpoint, runId, conf, standalone, maxRestarts, monitorInterval, nodeRank, masterAddr, masterPort, localAddr, role, logDir, launcher, grace, entrypoint,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter output = parse.InvocationConfiguration.Output;
            TextWriter error = parse.InvocationConfiguration.Error;
            AgentOptions options;
            try
            {
                (int min, int max) = AgentOptions.ParseNodes(parse.GetValue(nnodes)!);
                Dictionary<string, string> rdzvConf = AgentOptions.ParseConf(parse.GetValue(conf));
                foreach (string key in rdzvConf.Keys.Where(k => !AgentOptions.KnownConfKeys.Contains(k)))
                {
                    await error.WriteLineAsync($"kiln agent: --rdzv-conf {key} is not used by Kiln's rendezvous; ignored.").ConfigureAwait(false);
                }
                string[] program = parse.GetValue(entrypoint) ?? [];
                if (program.Length == 0)
                {
                    throw new LaunchException("no entrypoint: pass the worker's program after --, e.g. kiln agent --nproc-per-node 2 -- ./train.sh");
                }
                options = new AgentOptions
                {
                    Entrypoint = program,
                    ProcessesPerNode = ParseProcesses(parse.GetValue(nproc)!),
                    MinNodes = min,
                    MaxNodes = max,
                    Backend = parse.GetValue(backend)!,
                    Endpoint = ExpandVariables("--rdzv-endpoint", parse.GetValue(endpoint)),
                    RunId = parse.GetValue(runId)!,
                    Standalone = parse.GetValue(standalone),
                    Conf = rdzvConf,
                    MaxRestarts = NonNegative("--max-restarts", parse.GetValue(maxRestarts)),
                    MonitorInterval = Seconds("--monitor-interval", parse.GetValue(monitorInterval)),
                    NodeRank = parse.GetValue(nodeRank),
                    MasterAddress = ExpandVariables("--master-addr", parse.GetValue(masterAddr))!,
                    MasterPort = parse.GetValue(masterPort),
                    LocalAddress = parse.GetValue(localAddr),
                    Role = parse.GetValue(role)!,
                    LogDirectory = parse.GetValue(logDir) is { } dir ? Path.GetFullPath(dir) : null,
                    ErrorFile = Environment.GetEnvironmentVariable("TORCHELASTIC_ERROR_FILE"),
                    LauncherErrorFile = Environment.GetEnvironmentVariable("KILN_ERROR_FILE"),
                    StopGracePeriod = Seconds("--stop-grace-period", parse.GetValue(grace)),
                    Launcher = parse.GetValue(launcher)!,
                };
                if (!options.Standalone && options.Backend is not ("c10d" or "static") && !RendezvousStores.TryGet(options.Backend, out _))
                {
                    throw new LaunchException($"--rdzv-backend {options.Backend} is unknown; known: {string.Join(", ", RendezvousStores.Names.Prepend("static").Prepend("c10d"))}.");
                }
                if (options.Standalone)
                {
                    options = options with { Backend = "c10d", Endpoint = null, MinNodes = 1, MaxNodes = 1, RunId = options.RunId == "none" ? Guid.NewGuid().ToString("N") : options.RunId };
                }
                else if (options.Backend == "static" && options.MinNodes != options.MaxNodes)
                {
                    throw new LaunchException($"--rdzv-backend static needs a fixed --nnodes N, not {options.MinNodes}:{options.MaxNodes}; use c10d or etcd for elastic jobs.");
                }
            }
            catch (LaunchException ex)
            {
                await error.WriteLineAsync($"kiln agent: {ex.Message}").ConfigureAwait(false);
                return UsageExitCode;
            }

            var logger = new WriterLogger(error);
            AgentResult result;
            try
            {
                result = await new ElasticAgent(options, logger).RunAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (LaunchException ex)
            {
                await error.WriteLineAsync($"kiln agent: {ex.Message}").ConfigureAwait(false);
                return UsageExitCode;
            }
            if (result.Error is { } failure && result.ExitCode == 1)
            {
                await error.WriteLineAsync($"kiln agent: first failure: {failure.ToJsonString()}").ConfigureAwait(false);
            }
            await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"agent: state={result.State} restarts={result.Restarts} exit={result.ExitCode}")).ConfigureAwait(false);
            await output.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            return result.ExitCode;
        });
        return command;
    }

    private static Option<T> Opt<T>(string name, string description, T defaultValue)
    {
        var option = new Option<T>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        string underscored = "--" + name[2..].Replace('-', '_');
        if (underscored != name)
        {
            option.Aliases.Add(underscored);
        }
        return option;
    }

    private static int ParseProcesses(string text)
    {
        int gpus = Directory.Exists("/dev") ? Directory.GetFiles("/dev", "nvidia*").Count(f => f.Length > "/dev/nvidia".Length && char.IsAsciiDigit(f["/dev/nvidia".Length])) : 0;
        return text switch
        {
            "cpu" => Environment.ProcessorCount,
            "gpu" => gpus > 0 ? gpus : throw new LaunchException("--nproc-per-node gpu: no GPU (/dev/nvidiaN) on this host."),
            "auto" => gpus > 0 ? gpus : Environment.ProcessorCount,
            _ when int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= 1 => n,
            _ => throw new LaunchException($"--nproc-per-node {text} is not a positive number, cpu, gpu or auto."),
        };
    }

    private static int NonNegative(string name, int value) =>
        value >= 0 ? value : throw new LaunchException($"{name} {value} must not be negative.");

    private static TimeSpan Seconds(string name, double value) =>
        value > 0 && double.IsFinite(value) ? TimeSpan.FromSeconds(value) : throw new LaunchException($"{name} {value} must be a positive number of seconds.");

    /// <summary>Writes the agent's log events as lines on the agent's stderr.</summary>
    private sealed class WriterLogger(TextWriter writer) : ILogger
    {
        private readonly Lock _gate = new();

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }
            string level = logLevel switch
            {
                LogLevel.Information => "info",
                LogLevel.Warning => "warn",
                LogLevel.Error => "error",
                LogLevel.Critical => "crit",
                _ => "debug",
            };
            string line = string.Create(CultureInfo.InvariantCulture, $"kiln agent [{level} {eventId.Id}] {formatter(state, exception)}");
            lock (_gate)
            {
                writer.WriteLine(line);
                writer.Flush();
            }
        }
    }

    /// <summary>
    /// Replaces <c>${NAME}</c> with the environment variable NAME: schedulers pass the rank-0 host that way
    /// (<c>--rdzv-endpoint ${KILN_RANK0_HOST}:29500</c>) because no shell runs between them and the agent.
    /// </summary>
    /// <exception cref="LaunchException">A named variable is not set.</exception>
    internal static string? ExpandVariables(string flag, string? text)
    {
        if (text is null || !text.Contains("${", StringComparison.Ordinal))
        {
            return text;
        }
        var result = new System.Text.StringBuilder(text.Length);
        int at = 0;
        while (at < text.Length)
        {
            int start = text.IndexOf("${", at, StringComparison.Ordinal);
            int end = start < 0 ? -1 : text.IndexOf('}', start + 2);
            if (start < 0 || end < 0)
            {
                result.Append(text, at, text.Length - at);
                break;
            }
            result.Append(text, at, start - at);
            string name = text[(start + 2)..end];
            string value = Environment.GetEnvironmentVariable(name) is { Length: > 0 } set
                ? set
                : throw new LaunchException($"{flag} {text}: the environment variable {name} is not set (the scheduler sets it to the rank-0 host).");
            result.Append(value);
            at = end + 1;
        }
        return result.ToString();
    }
}
