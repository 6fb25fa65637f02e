using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>
/// A component written in C#: turns command-line arguments into an <see cref="AppDef"/>. Register it with
/// <see cref="ComponentCatalog.Register(IComponent)"/> in a program that hosts Kiln.Launch.
/// </summary>
/// <remarks>
/// <see cref="Build"/> may be called from several threads at once and should not keep state between calls. It parses
/// its own arguments; <c>.kilnconfig</c> defaults are in <see cref="ComponentContext.ConfigSections"/> under
/// <c>component:</c><see cref="Name"/>.
/// </remarks>
public interface IComponent
{
    /// <summary>The name users give <c>kiln run</c>; letters, digits, <c>.</c>, <c>_</c> and <c>-</c>.</summary>
    public string Name { get; }

    /// <summary>One line on what the component runs.</summary>
    public string Description { get; }

    /// <summary>The usage shown by <c>kiln builtins</c> and in errors.</summary>
    public string Usage { get; }

    /// <summary>Builds the app from the component's arguments.</summary>
    /// <param name="args">The arguments after the component's name.</param>
    /// <param name="context">Where Kiln runs and its configuration.</param>
    /// <exception cref="LaunchException">The arguments are wrong; the message says which and how.</exception>
    public AppDef Build(IReadOnlyList<string> args, ComponentContext context);
}
