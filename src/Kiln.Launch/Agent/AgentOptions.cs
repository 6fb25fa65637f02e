using System.Globalization;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Agent;

/// <summary>What <c>kiln agent</c> runs: torchrun's flags, parsed (docs/launch-agent.md).</summary>
internal sealed record AgentOptions
{
    /// <summary>The program and its arguments (after <c>--</c>), run directly as torchrun's <c>--no-python</c>.</summary>
    public required IReadOnlyList<string> Entrypoint { get; init; }

    /// <summary><c>--nproc-per-node</c>.</summary>
    public int ProcessesPerNode { get; init; } = 1;

    /// <summary>
    /// <c>--launcher</c>: <c>process</c> (one process per worker, the default) or <c>mpirun</c> (one Open MPI
    /// <c>mpirun</c> per round that starts every local worker as one MPI world; one node only).
    /// </summary>
    public string Launcher { get; init; } = ProcessLauncher;

    /// <summary>The default launcher: the agent starts each worker process itself.</summary>
    public const string ProcessLauncher = "process";

    /// <summary>The launcher that starts the local workers through one Open MPI <c>mpirun</c>.</summary>
    public const string MpirunLauncher = "mpirun";

    /// <summary><c>--nnodes</c> MIN.</summary>
    public int MinNodes { get; init; } = 1;

    /// <summary><c>--nnodes</c> MAX.</summary>
    public int MaxNodes { get; init; } = 1;

    /// <summary><c>--rdzv-backend</c>: c10d, static, or a name in <see cref="RendezvousStores"/> (etcd).</summary>
    public string Backend { get; init; } = "static";

    /// <summary><c>--rdzv-endpoint</c> HOST[:PORT]; null with <c>--standalone</c> or a one-node static job.</summary>
    public string? Endpoint { get; init; }

    /// <summary><c>--rdzv-id</c> (TORCHELASTIC_RUN_ID).</summary>
    public string RunId { get; init; } = "none";

    /// <summary><c>--standalone</c>: one node, a store in the agent, nothing listening.</summary>
    public bool Standalone { get; init; }

    /// <summary><c>--rdzv-conf</c> key=value pairs.</summary>
    public IReadOnlyDictionary<string, string> Conf { get; init; } = new Dictionary<string, string>();

    /// <summary><c>--max-restarts</c>, counted per job.</summary>
    public int MaxRestarts { get; init; }

    /// <summary><c>--monitor-interval</c> (default 0.1 s).</summary>
    public TimeSpan MonitorInterval { get; init; } = TimeSpan.FromSeconds(0.1);

    /// <summary><c>--node-rank</c> (static).</summary>
    public int? NodeRank { get; init; }

    /// <summary><c>--master-addr</c> (static; default 127.0.0.1).</summary>
    public string MasterAddress { get; init; } = "127.0.0.1";

    /// <summary><c>--master-port</c> (static; default 29500).</summary>
    public int MasterPort { get; init; } = 29500;

    /// <summary><c>--local-addr</c>: the address other nodes reach this one at (MASTER_ADDR when group rank 0).</summary>
    public string? LocalAddress { get; init; }

    /// <summary><c>--role</c> (ROLE_NAME).</summary>
    public string Role { get; init; } = "default";

    /// <summary><c>--log-dir</c>: workers' logs, error.json and agent-state.json; null to inherit the agent's streams.</summary>
    public string? LogDirectory { get; init; }

    /// <summary>The agent's own error file (its TORCHELASTIC_ERROR_FILE when a launcher set one).</summary>
    public string? ErrorFile { get; init; }

    /// <summary>
    /// The error file Kiln's local scheduler gives a replica (KILN_ERROR_FILE). The agent writes its error.json there
    /// too and, without <see cref="LogDirectory"/>, its agent-state.json beside it. Workers do not inherit the variable.
    /// </summary>
    public string? LauncherErrorFile { get; init; }

    /// <summary>Where agent-state.json goes: the log folder, else the folder of <see cref="LauncherErrorFile"/>.</summary>
    public string? StateDirectory => LogDirectory ?? (LauncherErrorFile is { } file ? Path.GetDirectoryName(Path.GetFullPath(file)) : null);

    /// <summary>SIGTERM→SIGKILL grace when stopping workers (<c>--stop-grace-period</c>, default 5 s).</summary>
    public TimeSpan StopGracePeriod { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Conf key <c>join_timeout</c> (alias <c>timeout</c>), seconds.</summary>
    public TimeSpan JoinTimeout => Seconds("join_timeout", Seconds("timeout", TimeSpan.FromSeconds(600)));

    /// <summary>Conf key <c>last_call_timeout</c>, seconds.</summary>
    public TimeSpan LastCallTimeout => Seconds("last_call_timeout", TimeSpan.FromSeconds(30));

    /// <summary>Conf key <c>heartbeat_timeout</c>, seconds.</summary>
    public TimeSpan HeartbeatTimeout => Seconds("heartbeat_timeout", TimeSpan.FromSeconds(5));

    /// <summary>Conf key <c>exit_barrier_timeout</c>, seconds (torch: 300; Kiln: 30).</summary>
    public TimeSpan ExitBarrierTimeout => Seconds("exit_barrier_timeout", TimeSpan.FromSeconds(30));

    /// <summary>Conf key <c>is_host</c>: whether this agent hosts the c10d store; null to decide by the endpoint.</summary>
    public bool? IsHost => Conf.TryGetValue("is_host", out string? value)
        ? value.ToUpperInvariant() switch
        {
            "1" or "TRUE" or "YES" or "Y" or "ON" => true,
            "0" or "FALSE" or "NO" or "N" or "OFF" => false,
            _ => throw new LaunchException($"--rdzv-conf is_host={value} is not true or false."),
        }
        : null;

    /// <summary>The conf keys the agent reads; others are ignored (with a warning).</summary>
    public static IReadOnlySet<string> KnownConfKeys { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        "join_timeout", "timeout", "last_call_timeout", "heartbeat_timeout", "exit_barrier_timeout", "is_host", "close_timeout", "read_timeout",
    };

    /// <summary>Parses <c>--nnodes</c>: <c>N</c> or <c>MIN:MAX</c>.</summary>
    public static (int Min, int Max) ParseNodes(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] parts = text.Split(':');
        if (parts.Length is 1 or 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int min)
            && int.TryParse(parts[^1], NumberStyles.None, CultureInfo.InvariantCulture, out int max)
            && min >= 1 && max >= min)
        {
            return (min, max);
        }
        throw new LaunchException($"--nnodes {text} is not N or MIN:MAX with 1 <= MIN <= MAX.");
    }

    /// <summary>Parses <c>--rdzv-conf k=v,k=v</c>.</summary>
    public static Dictionary<string, string> ParseConf(string? text)
    {
        var conf = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int equals = pair.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw new LaunchException($"--rdzv-conf item \"{pair}\" is not key=value.");
            }
            conf[pair[..equals].Trim()] = pair[(equals + 1)..].Trim();
        }
        return conf;
    }

    /// <summary>Splits <c>HOST[:PORT]</c> (IPv6 in brackets), with <paramref name="defaultPort"/> when none is given.</summary>
    public static (string Host, int Port) ParseEndpoint(string text, int defaultPort)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        string host = text;
        int port = defaultPort;
        int colon = text.LastIndexOf(':');
        int bracket = text.LastIndexOf(']');
        if (colon > bracket && text.Count(c => c == ':') == 1 || (bracket > 0 && colon > bracket))
        {
            host = text[..colon];
            if (!int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port) || port > 65535)
            {
                throw new LaunchException($"--rdzv-endpoint {text}: \"{text[(colon + 1)..]}\" is not a port.");
            }
        }
        host = host.Trim('[', ']');
        if (host.Length == 0)
        {
            throw new LaunchException($"--rdzv-endpoint {text} has no host.");
        }
        return (host, port);
    }

    private TimeSpan Seconds(string key, TimeSpan fallback)
    {
        if (!Conf.TryGetValue(key, out string? value))
        {
            return fallback;
        }
        return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) && seconds >= 0
            ? TimeSpan.FromSeconds(seconds)
            : throw new LaunchException($"--rdzv-conf {key}={value} is not a number of seconds.");
    }
}
