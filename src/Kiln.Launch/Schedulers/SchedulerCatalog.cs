using Kiln.Launch.Schedulers.Local;

namespace Kiln.Launch.Schedulers;

/// <summary>The schedulers <c>kiln run -s NAME</c> knows: a name and a factory each.</summary>
internal static class SchedulerCatalog
{
    /// <summary>The scheduler <c>kiln run</c> uses when neither <c>-s</c> nor <c>[cli:run] scheduler</c> names one.</summary>
    public const string DefaultScheduler = LocalScheduler.SchedulerName;

    private static readonly Dictionary<string, Func<SchedulerContext, IScheduler>> s_factories = new(StringComparer.Ordinal)
    {
        [LocalScheduler.SchedulerName] = context => new LocalScheduler(new LocalSchedulerOptions
        {
            StateDirectory = Path.Combine(context.StateDirectory, LocalScheduler.SchedulerName),
            SupervisorCommand = context.KilnCommand,
            WorkingDirectory = context.WorkingDirectory,
            GetEnvironmentVariable = context.GetEnvironmentVariable,
            TimeProvider = context.TimeProvider,
            LoggerFactory = context.LoggerFactory,
        }),

        // Other schedulers: one line each, ["name"] = context => new XScheduler(...),
        ["slurm"] = context => new Slurm.SlurmScheduler(context.GetEnvironmentVariable("SLURM_CONF"), context.TimeProvider, currentDirectory: () => context.WorkingDirectory),
        [Kubernetes.KubernetesScheduler.SchedulerName] = context => new Kubernetes.KubernetesScheduler(new Kubernetes.KubernetesSchedulerSettings { Locator = new Kubernetes.KubeconfigLocator(context.GetEnvironmentVariable), TimeProvider = context.TimeProvider }),
    };

    /// <summary>The names of every scheduler, sorted.</summary>
    public static IReadOnlyList<string> Names => [.. s_factories.Keys.Order(StringComparer.Ordinal)];

    /// <summary>Creates the scheduler called <paramref name="name"/>.</summary>
    /// <exception cref="LaunchException">No such scheduler, or its tools are missing (the factory says which).</exception>
    public static IScheduler Create(string name, SchedulerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return s_factories.TryGetValue(name, out Func<SchedulerContext, IScheduler>? factory)
            ? factory(context)
            : throw new LaunchException($"unknown scheduler \"{name}\"; the schedulers are {string.Join(", ", Names)}.");
    }

    /// <summary>The state folder: <c>$KILN_STATE_DIR</c>, else <c>~/.kiln</c>.</summary>
    public static string DefaultStateDirectory(Func<string, string?> getEnvironmentVariable)
    {
        ArgumentNullException.ThrowIfNull(getEnvironmentVariable);
        if (getEnvironmentVariable("KILN_STATE_DIR") is { Length: > 0 } state)
        {
            return Path.GetFullPath(state);
        }
        string home = getEnvironmentVariable("HOME") is { Length: > 0 } h ? h : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return Path.Combine(home, ".kiln");
    }
}
