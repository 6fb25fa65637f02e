namespace Kiln.Launch.Specs;

/// <summary>What to do when a replica fails (TorchX's retry policies).</summary>
public enum RetryPolicy
{
    /// <summary>Restart the whole app (every role) up to the role's max retries.</summary>
    Application,

    /// <summary>Replace only the failed replica; use with <c>dist.ddp</c>, whose agent restarts its own group.</summary>
    Replica,

    /// <summary>Restart every replica of the failed role.</summary>
    Role,
}

/// <summary>Resources one replica asks for.</summary>
/// <param name="Cpu">CPU cores.</param>
/// <param name="Gpu">GPUs.</param>
/// <param name="MemMB">Memory in MiB.</param>
public sealed record Resource(int Cpu = 1, int Gpu = 0, int MemMB = 1024)
{
    /// <summary>No particular request: one core, no GPU, 1 GiB.</summary>
    public static Resource Default { get; } = new();
}

/// <summary>A bind mount (<c>type=bind,src=…,dst=…[,readonly]</c>) into a replica's container.</summary>
public sealed record Mount(string Source, string Destination, bool ReadOnly = false);

/// <summary>
/// One role of an app: the same command run as <see cref="NumReplicas"/> replicas. Arguments and environment values may
/// hold macros (<see cref="Macros"/>), replaced per replica at submission.
/// </summary>
public sealed record Role
{
    /// <summary>The role's name, unique in its app.</summary>
    public required string Name { get; init; }

    /// <summary>The program to run (a path or a name on PATH; inside <see cref="Image"/> where the scheduler uses images).</summary>
    public required string Entrypoint { get; init; }

    /// <summary>A container image, or for local schedulers the working folder; empty: the current folder.</summary>
    public string Image { get; init; } = "";

    /// <summary>The entrypoint's arguments.</summary>
    public IReadOnlyList<string> Args { get; init; } = [];

    /// <summary>Environment variables set for every replica, on top of the scheduler's.</summary>
    public IReadOnlyDictionary<string, string> Env { get; init; } = new Dictionary<string, string>();

    /// <summary>How many replicas run. Default: 1.</summary>
    public int NumReplicas { get; init; } = 1;

    /// <summary>The fewest replicas the role can run with (elastic roles); null: all of them.</summary>
    public int? MinReplicas { get; init; }

    /// <summary>Resources per replica.</summary>
    public Resource Resource { get; init; } = Resource.Default;

    /// <summary>Restarts allowed after a failure. Default: 0.</summary>
    public int MaxRetries { get; init; }

    /// <summary>What a restart covers. Default: the whole app.</summary>
    public RetryPolicy RetryPolicy { get; init; } = RetryPolicy.Application;

    /// <summary>Named ports a replica listens on.</summary>
    public IReadOnlyDictionary<string, int> PortMap { get; init; } = new Dictionary<string, int>();

    /// <summary>Mounts into the replica's container.</summary>
    public IReadOnlyList<Mount> Mounts { get; init; } = [];
}

/// <summary>An app: a name and one or more roles that run together.</summary>
public sealed record AppDef
{
    /// <summary>The app's name; the scheduler adds a unique suffix to make the app id.</summary>
    public required string Name { get; init; }

    /// <summary>The roles, in order (the first role's replica 0 is rank 0 for <c>${rank0_env}</c>).</summary>
    public required IReadOnlyList<Role> Roles { get; init; }

    /// <summary>Free-form metadata that schedulers may pass on (labels, annotations).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();
}
