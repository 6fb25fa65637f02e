using System.Globalization;
using System.Text.RegularExpressions;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>
/// <c>dist.ddp</c>: data-parallel training on N nodes of M workers each (TorchX's <c>dist.ddp</c>). One role whose
/// replicas each run <c>kiln agent</c> (Kiln's torchrun) with torchrun's flags; the agent starts the M local workers.
/// </summary>
internal sealed partial class DdpComponent : IComponent
{
    /// <summary>The rendezvous port on the rank-0 node for multi-node jobs (TorchX's <c>rdzv_port</c>).</summary>
    public const int RendezvousPort = 29500;

    private static readonly string[] s_backends = ["c10d", "etcd", "static"];
    private static readonly string[] s_programOptions = ["script", "m", "entrypoint"];

    private static readonly ComponentSyntax s_syntax = new(
        "dist.ddp",
        [
            OptionSpec.Value("j", "[MIN:]NxM", "N nodes (at least MIN, elastic) of M workers each; M alone means 1xM", "1x2"),
            OptionSpec.Value("script", "PATH", "the training program: a .dll runs with dotnet, a .py with python3, anything else directly"),
            OptionSpec.Value("m", "MODULE", "a Python module to run with python3 -m (instead of --script)"),
            OptionSpec.Value("entrypoint", "PATH", "a program to run as it is (instead of --script)"),
            OptionSpec.Value("rdzv-backend", "c10d|etcd|static", "the rendezvous backend", "c10d"),
            OptionSpec.Value("rdzv-endpoint", "HOST:PORT", $"the rendezvous endpoint (default: the rank-0 node's host:{RendezvousPort}; one node: 127.0.0.1:0, standalone)"),
            OptionSpec.Value("max-restarts", "N", "whole-group restarts the agents may make, counted per job", "0"),
            OptionSpec.Value("monitor-interval", "SECONDS", "how often the agent checks its workers (agent default: 0.1)"),
            OptionSpec.Value("launcher", "process|mpirun", "how the agent starts its workers: one process each, or one Open MPI mpirun (one MPI world; one node only)", "process"),
            CommonOptions.MaxRetries,
            CommonOptions.Env,
            CommonOptions.NamedResource,
            CommonOptions.Cpu(2),
            CommonOptions.Gpu(0),
            CommonOptions.MemMB(1024),
            CommonOptions.Image,
            OptionSpec.Value("name", "NAME", "the app's and role's name (default: app named after the program, role trainer)"),
            OptionSpec.Flag("debug", "verbose NCCL and distributed logs (NCCL_DEBUG=INFO, TORCH_DISTRIBUTED_DEBUG=DETAIL, …)"),
        ],
        Rest: "ARGS…");

    /// <summary>What <c>--debug</c> adds to the environment (TorchX's debug flags, NCCL's and Kiln's).</summary>
    internal static IReadOnlyDictionary<string, string> DebugEnv { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["NCCL_DEBUG"] = "INFO",
        ["NCCL_DESYNC_DEBUG"] = "1",
        ["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL",
        ["TORCH_SHOW_CPP_STACKTRACES"] = "1",
        ["CUDA_LAUNCH_BLOCKING"] = "1",
        ["KILN_DISTRIBUTED_DEBUG"] = "DETAIL",
    };

    public string Name => s_syntax.Component;

    public string Description => "Distributed data-parallel training: N nodes × M workers under kiln agent (torchrun's flags, elastic restarts).";

    public string Usage => s_syntax.Usage;

    public AppDef Build(IReadOnlyList<string> args, ComponentContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        ComponentArguments parsed = s_syntax.Parse(args, context);
        (int min, int max, int perNode) = ParseJ(parsed.Value("j")!);

        string[] given = [.. s_programOptions.Where(parsed.IsGiven)];
        if (given.Length != 1)
        {
            throw s_syntax.Error(given.Length == 0
                ? "no program given: use --script PATH, -m MODULE or --entrypoint PATH"
                : $"give only one of --script, -m and --entrypoint (got {string.Join(" and ", given.Select(g => g.Length == 1 ? "-" + g : "--" + g))})");
        }
        (string[] command, string programName) = Command(given[0], parsed.Value(given[0])!);

        string backend = parsed.Value("rdzv-backend")!;
        if (!s_backends.Contains(backend, StringComparer.Ordinal))
        {
            throw s_syntax.Error($"option --rdzv-backend is one of {string.Join(", ", s_backends)}, not '{backend}'");
        }
        string? endpoint = parsed.Value("rdzv-endpoint");
        if (endpoint is not null && !IsEndpoint(endpoint))
        {
            throw s_syntax.Error($"option --rdzv-endpoint is HOST:PORT, not '{endpoint}'");
        }
        bool standalone = max == 1 && endpoint is null && backend != "etcd";
        if (endpoint is null && backend == "etcd")
        {
            throw s_syntax.Error("the etcd rendezvous backend needs --rdzv-endpoint HOST:PORT (the etcd server)");
        }
        // ${rank0_env} is the *name* of the variable that holds the rank-0 host on this scheduler; "$${" keeps a
        // literal "${", so each replica gets e.g. "${KILN_RANK0_HOST}:29500", which the agent expands from its environment.
        endpoint ??= standalone ? "127.0.0.1:0" : "$${${rank0_env}}:" + RendezvousPort.ToString(CultureInfo.InvariantCulture);
        if (standalone)
        {
            backend = "c10d";
        }

        var agentArgs = new List<string>
        {
            "agent",
            "--nnodes", min == max ? max.ToString(CultureInfo.InvariantCulture) : $"{min}:{max}",
            "--nproc-per-node", perNode.ToString(CultureInfo.InvariantCulture),
        };
        if (standalone)
        {
            agentArgs.Add("--standalone");
        }
        agentArgs.AddRange(
        [
            "--rdzv-backend", backend,
            "--rdzv-endpoint", endpoint,
            "--rdzv-id", "${app_id}",
            "--max-restarts", parsed.Int("max-restarts", 0)!.Value.ToString(CultureInfo.InvariantCulture),
        ]);
        string? monitor = parsed.Value("monitor-interval");
        if (monitor is not null)
        {
            if (!double.TryParse(monitor, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) || seconds <= 0 || !double.IsFinite(seconds))
            {
                throw s_syntax.Error($"option --monitor-interval is a positive number of seconds, not '{monitor}'");
            }
            agentArgs.AddRange(["--monitor-interval", monitor]);
        }
        string launcher = parsed.Value("launcher")!;
        if (launcher is not ("process" or "mpirun"))
        {
            throw s_syntax.Error($"option --launcher is process or mpirun, not '{launcher}'");
        }
        if (launcher == "mpirun")
        {
            if (max != 1)
            {
                throw s_syntax.Error($"option --launcher mpirun runs one node (-j 1xM), not {max} nodes; use --launcher process for several nodes");
            }
            agentArgs.AddRange(["--launcher", launcher]);
        }
        agentArgs.AddRange(["--node-rank", "${replica_id}", "--"]);
        agentArgs.AddRange(command);
        agentArgs.AddRange(parsed.Rest);

        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        if (context.GetEnvironmentVariable("NCCL_NVLS_ENABLE") is { } nvls)
        {
            env["NCCL_NVLS_ENABLE"] = nvls;
        }
        if (parsed.Flag("debug"))
        {
            foreach (KeyValuePair<string, string> pair in DebugEnv)
            {
                env[pair.Key] = pair.Value;
            }
        }
        foreach (KeyValuePair<string, string> pair in parsed.KeyValues("env"))
        {
            env[pair.Key] = pair.Value;
        }

        string? name = parsed.Value("name");
        if (name is not null && !ValidName().IsMatch(name))
        {
            throw s_syntax.Error($"option --name is letters, digits, '.', '_' and '-' (starting with a letter or digit), not '{name}'");
        }
        return new AppDef
        {
            Name = name ?? AppName(programName),
            Roles =
            [
                new Role
                {
                    Name = name ?? "trainer",
                    Entrypoint = context.KilnPath,
                    Image = parsed.Value("image")!,
                    Args = agentArgs,
                    Env = env,
                    NumReplicas = max,
                    MinReplicas = min == max ? null : min,
                    Resource = CommonOptions.Resource(parsed, s_syntax, context),
                    MaxRetries = parsed.Int("max-retries", 0)!.Value,
                    PortMap = standalone ? new Dictionary<string, int>() : new Dictionary<string, int> { ["c10d"] = RendezvousPort },
                },
            ],
        };
    }

    /// <summary>Parses <c>-j</c>: <c>NxM</c>, <c>MIN:NxM</c> or <c>M</c> (one node).</summary>
    /// <exception cref="LaunchException">Malformed, zero, or MIN above N.</exception>
    internal static (int Min, int Max, int PerNode) ParseJ(string text)
    {
        Match match = JForm().Match(text.Trim());
        if (!match.Success)
        {
            throw s_syntax.Error($"option -j is [MIN:]NxM (N nodes, at least MIN, of M workers each; e.g. 2x4 or 1:3x2), not '{text}'");
        }
        if (!int.TryParse(match.Groups["n"].Success ? match.Groups["n"].Value : "1", NumberStyles.None, CultureInfo.InvariantCulture, out int max)
            || !int.TryParse(match.Groups["m"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int perNode)
            || !int.TryParse(match.Groups["min"].Success ? match.Groups["min"].Value : "1", NumberStyles.None, CultureInfo.InvariantCulture, out int min))
        {
            throw s_syntax.Error($"option -j is [MIN:]NxM with numbers that fit in 32 bits, not '{text}'");
        }
        if (!match.Groups["min"].Success)
        {
            min = max;
        }
        if (max == 0 || perNode == 0 || min == 0)
        {
            throw s_syntax.Error($"option -j is [MIN:]NxM with MIN, N and M at least 1, not '{text}'");
        }
        if (min > max)
        {
            throw s_syntax.Error($"option -j is [MIN:]NxM with MIN no more than N, not '{text}' ({min} > {max})");
        }
        return (min, max, perNode);
    }

    private static (string[] Command, string ProgramName) Command(string kind, string value)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw s_syntax.Error($"option {(kind.Length == 1 ? "-" : "--")}{kind} is empty");
        }
        if (kind == "m")
        {
            return (["python3", "-m", value], value.Split('.')[^1]);
        }
        string programName = Path.GetFileNameWithoutExtension(value);
        if (kind == "script" && value.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
        {
            return (["dotnet", value], programName);
        }
        if (kind == "script" && value.EndsWith(".py", StringComparison.OrdinalIgnoreCase))
        {
            return (["python3", value], programName);
        }
        return ([value], programName);
    }

    private static string AppName(string programName)
    {
        string name = InvalidNameChars().Replace(programName, "-").Trim('-', '.', '_');
        return name.Length == 0 ? "ddp" : name;
    }

    private static bool IsEndpoint(string endpoint)
    {
        int colon = endpoint.LastIndexOf(':');
        return colon > 0 && colon < endpoint.Length - 1
            && int.TryParse(endpoint[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int port) && port <= 65535;
    }

    [GeneratedRegex(@"^(?:(?:(?<min>\d+):)?(?<n>\d+)x)?(?<m>\d+)$", RegexOptions.CultureInvariant)]
    private static partial Regex JForm();

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex ValidName();

    [GeneratedRegex(@"[^A-Za-z0-9._-]+", RegexOptions.CultureInvariant)]
    private static partial Regex InvalidNameChars();
}
