using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>
/// Finds a component by name and builds its app: the built-ins (<c>dist.ddp</c>, <c>utils.echo</c>, <c>utils.sh</c>,
/// <c>utils.binary</c>), C# components added with <see cref="Register(IComponent)"/>, and component files (JSON or
/// YAML) given by path or found as <c>.kiln/components/NAME.{json,yaml,yml}</c>.
/// </summary>
/// <remarks>
/// A name is looked up in that order: a path (it contains <c>/</c> or ends in <c>.json</c>, <c>.yaml</c> or <c>.yml</c>),
/// a built-in, a registered component, then <c>.kiln/components/</c> under <see cref="ComponentContext.WorkingDirectory"/>.
/// Built-ins cannot be replaced. All members are thread-safe. See <c>docs/launch-components.md</c>.
/// </remarks>
public static partial class ComponentCatalog
{
    private static readonly IComponent[] s_builtIns = [new DdpComponent(), new BinaryComponent(), new EchoComponent(), new ShComponent()];
    private static readonly ConcurrentDictionary<string, IComponent> s_registered = new(StringComparer.Ordinal);

    /// <summary>Builds the app of <paramref name="component"/> from its arguments.</summary>
    /// <param name="component">A component's name (<c>dist.ddp</c>) or a component file's path (<c>./train.yaml</c>).</param>
    /// <param name="args">The arguments after the component's name.</param>
    /// <param name="context">Where Kiln runs and its configuration.</param>
    /// <returns>The app, with macros (<c>${app_id}</c>, <c>${replica_id}</c>, …) still in place for the scheduler.</returns>
    /// <exception cref="LaunchException">An unknown component (the message lists the known ones), an unreadable component
    /// file, or wrong arguments. The message's first line names the component and the problem; where the arguments are
    /// wrong, a second line shows the component's synopsis.</exception>
    public static AppDef Build(string component, IReadOnlyList<string> args, ComponentContext context)
    {
        ArgumentNullException.ThrowIfNull(component);
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(context);
        IComponent found = Find(component, context);
        AppDef app = found.Build(args, context)
            ?? throw new LaunchException($"component {component}: built no app");
        Validate(component, app);
        return app;
    }

    /// <summary>The components <c>kiln builtins</c> lists: the built-ins, then registered components, then component
    /// files in <c>.kiln/components/</c>, each group by name.</summary>
    /// <param name="context">Where to look for <c>.kiln/components/</c>.</param>
    /// <remarks>A component file that cannot be read is listed with the problem as its description.</remarks>
    public static IReadOnlyList<ComponentInfo> BuiltIns(ComponentContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var result = new List<ComponentInfo>();
        result.AddRange(s_builtIns.OrderBy(c => c.Name, StringComparer.Ordinal).Select(Info));
        result.AddRange(s_registered.Values.OrderBy(c => c.Name, StringComparer.Ordinal).Select(Info));
        foreach ((string name, string path) in FileComponent.Discover(context))
        {
            if (result.Exists(c => c.Name == name))
            {
                continue;
            }
            try
            {
                result.Add(Info(FileComponent.Load(path, name)));
            }
            catch (LaunchException e)
            {
                result.Add(new ComponentInfo(name, "cannot be read: " + e.Message.Split('\n')[0]));
            }
        }
        return result;
    }

    /// <summary>Adds a C# component, found by its <see cref="IComponent.Name"/> from then on; a later registration under
    /// the same name replaces the earlier one.</summary>
    /// <param name="component">The component.</param>
    /// <exception cref="ArgumentException">The name is not letters, digits, <c>.</c>, <c>_</c> and <c>-</c>, looks like a
    /// file, or is a built-in's.</exception>
    public static void Register(IComponent component)
    {
        ArgumentNullException.ThrowIfNull(component);
        string name = component.Name;
        if (string.IsNullOrEmpty(name) || !ValidName().IsMatch(name) || FileComponent.IsPath(name))
        {
            throw new ArgumentException($"'{name}' is not a component name: use letters, digits, '.', '_' and '-', starting with a letter or digit, and no .json/.yaml/.yml ending.", nameof(component));
        }
        if (Array.Exists(s_builtIns, b => b.Name == name))
        {
            throw new ArgumentException($"'{name}' is a built-in component and cannot be replaced; choose another name.", nameof(component));
        }
        s_registered[name] = component;
    }

    /// <summary>Removes a registered component (tests).</summary>
    internal static bool Unregister(string name) => s_registered.TryRemove(name, out _);

    private static IComponent Find(string component, ComponentContext context)
    {
        if (FileComponent.IsPath(component))
        {
            string path = context.Resolve(component);
            if (!File.Exists(path))
            {
                throw new LaunchException($"component file {component} not found (looked for {path})");
            }
            return FileComponent.Load(path, component);
        }
        IComponent? found = Array.Find(s_builtIns, b => b.Name == component) ?? s_registered.GetValueOrDefault(component);
        if (found is not null)
        {
            return found;
        }
        string? file = FileComponent.Discover(context).FirstOrDefault(f => f.Name == component).Path;
        if (file is not null)
        {
            return FileComponent.Load(file, component);
        }
        string[] others = [.. s_registered.Keys.Concat(FileComponent.Discover(context).Select(f => f.Name)).Distinct().Order(StringComparer.Ordinal)];
        string[] builtIns = [.. s_builtIns.Select(b => b.Name).Order(StringComparer.Ordinal)];
        throw new LaunchException(
            $"unknown component '{component}'{Suggestions.DidYouMean(component, builtIns.Concat(others))}; built-ins: {string.Join(", ", builtIns)}"
            + (others.Length > 0 ? $"; also: {string.Join(", ", others)}" : "")
            + " (give a component file's path, or add .kiln/components/NAME.yaml; kiln builtins lists them all)");
    }

    private static ComponentInfo Info(IComponent component) =>
        new(component.Name, component.Description) { Usage = component.Usage };

    private static void Validate(string component, AppDef app)
    {
        if (app.Roles is null || app.Roles.Count == 0)
        {
            throw new LaunchException($"component {component}: the app has no roles");
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Role role in app.Roles)
        {
            if (string.IsNullOrWhiteSpace(role.Name) || !names.Add(role.Name))
            {
                throw new LaunchException($"component {component}: role names must be unique and not empty ('{role.Name}')");
            }
            if (string.IsNullOrWhiteSpace(role.Entrypoint))
            {
                throw new LaunchException($"component {component}: role {role.Name} has no entrypoint");
            }
            if (role.NumReplicas < 1 || role.MinReplicas is < 1 || role.MinReplicas > role.NumReplicas)
            {
                throw new LaunchException($"component {component}: role {role.Name} needs 1 <= min_replicas <= num_replicas (got {role.MinReplicas?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"} and {role.NumReplicas})");
            }
            if (role.MaxRetries < 0)
            {
                throw new LaunchException($"component {component}: role {role.Name} has negative max_retries");
            }
        }
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex ValidName();
}
