using System.Globalization;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>
/// Resources by name for <c>-h NAME</c> (TorchX's named resources): Kiln's own and <c>[resource:NAME]</c> sections of
/// <c>.kilnconfig</c> (keys <c>cpu</c>, <c>gpu</c>, <c>memMB</c>), which may also redefine Kiln's.
/// </summary>
internal static class NamedResources
{
    /// <summary>Kiln's named resources.</summary>
    public static IReadOnlyDictionary<string, Resource> BuiltIn { get; } = new Dictionary<string, Resource>(StringComparer.OrdinalIgnoreCase)
    {
        ["cpu.small"] = new(Cpu: 2, Gpu: 0, MemMB: 4096),
        ["cpu.medium"] = new(Cpu: 8, Gpu: 0, MemMB: 16384),
        ["cpu.large"] = new(Cpu: 32, Gpu: 0, MemMB: 65536),
        ["gpu.small"] = new(Cpu: 8, Gpu: 1, MemMB: 65536),
        ["gpu.medium"] = new(Cpu: 32, Gpu: 4, MemMB: 262144),
        ["gpu.large"] = new(Cpu: 64, Gpu: 8, MemMB: 524288),
    };

    /// <summary>The resource named <paramref name="name"/>.</summary>
    /// <exception cref="LaunchException">No such resource, or a malformed <c>[resource:NAME]</c> section.</exception>
    public static Resource Get(string name, ComponentContext context, ComponentSyntax syntax)
    {
        IReadOnlyDictionary<string, string>? section = context.Section("resource:" + name);
        if (section is not null)
        {
            Resource baseline = BuiltIn.GetValueOrDefault(name) ?? Resource.Default;
            return new Resource(
                Read(section, "cpu", baseline.Cpu, name, syntax),
                Read(section, "gpu", baseline.Gpu, name, syntax),
                Read(section, "memMB", baseline.MemMB, name, syntax));
        }
        if (BuiltIn.TryGetValue(name, out Resource? resource))
        {
            return resource;
        }
        IEnumerable<string> configured = context.ConfigSections.Keys
            .Where(k => k.StartsWith("resource:", StringComparison.OrdinalIgnoreCase))
            .Select(k => k["resource:".Length..]);
        throw syntax.Error($"no named resource '{name}'; known: {string.Join(", ", BuiltIn.Keys.Concat(configured).Order(StringComparer.Ordinal))} (add others as [resource:NAME] in .kilnconfig)");
    }

    private static int Read(IReadOnlyDictionary<string, string> section, string key, int fallback, string name, ComponentSyntax syntax)
    {
        string? text = section.FirstOrDefault(p => string.Equals(p.Key.Trim(), key, StringComparison.OrdinalIgnoreCase)).Value;
        if (text is null)
        {
            return fallback;
        }
        return int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= 0
            ? value
            : throw syntax.Error($".kilnconfig [resource:{name}] key {key} is a whole number, not '{text}'");
    }
}
