namespace Kiln.Launch.Components;

/// <summary>What a component may look at while it builds an app: where the user runs Kiln, how to start Kiln itself, and
/// the <c>.kilnconfig</c> sections.</summary>
/// <param name="WorkingDirectory">The folder the user runs <c>kiln run</c> in; relative component files and
/// <c>.kiln/components/</c> are found from here.</param>
/// <param name="KilnPath">How a replica starts Kiln (the <c>kiln</c> executable's path, or <c>kiln</c> on PATH);
/// <c>dist.ddp</c> replicas run <c>KilnPath agent …</c>.</param>
public sealed record ComponentContext(string WorkingDirectory, string KilnPath)
{
    private static readonly IReadOnlyDictionary<string, IReadOnlyDictionary<string, string>> s_noSections =
        new Dictionary<string, IReadOnlyDictionary<string, string>>();

    /// <summary>The <c>.kilnconfig</c> sections by name (e.g. <c>component:dist.ddp</c>), each a map of keys to values.</summary>
    /// <value>Default: no sections.</value>
    /// <remarks>
    /// The keys of a <c>[component:NAME]</c> section are defaults for that component's options, named without their dashes
    /// (<c>j = 2x4</c>, <c>rdzv-backend = etcd</c>, <c>memMB = 4096</c>); options on the command line win. A
    /// <c>[resource:NAME]</c> section (keys <c>cpu</c>, <c>gpu</c>, <c>memMB</c>) adds a named resource for <c>-h NAME</c>.
    /// Section and key names are matched without regard to case.
    /// </remarks>
    /// <exception cref="ArgumentNullException">Set to null.</exception>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, string>> ConfigSections
    {
        get;
        init => field = value ?? throw new ArgumentNullException(nameof(value));
    } = s_noSections;

    /// <summary>Reads the submitting environment (<c>NCCL_NVLS_ENABLE</c> is passed on); tests replace it.</summary>
    internal Func<string, string?> GetEnvironmentVariable { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>The section <paramref name="name"/>, matched without regard to case, or null.</summary>
    internal IReadOnlyDictionary<string, string>? Section(string name)
    {
        if (ConfigSections.TryGetValue(name, out IReadOnlyDictionary<string, string>? section))
        {
            return section;
        }
        foreach (KeyValuePair<string, IReadOnlyDictionary<string, string>> pair in ConfigSections)
        {
            if (string.Equals(pair.Key.Trim(), name, StringComparison.OrdinalIgnoreCase))
            {
                return pair.Value;
            }
        }
        return null;
    }

    /// <summary>A path relative to <see cref="WorkingDirectory"/> made absolute.</summary>
    internal string Resolve(string path) => Path.GetFullPath(path, Path.GetFullPath(WorkingDirectory));
}
