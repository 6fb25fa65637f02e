namespace Kiln.Launch.Components;

/// <summary>A component as <c>kiln builtins</c> lists it.</summary>
/// <param name="Name">The name to give <c>kiln run</c>, e.g. <c>dist.ddp</c>.</param>
/// <param name="Description">One line on what the component runs.</param>
public sealed record ComponentInfo(string Name, string Description)
{
    /// <summary>The component's usage: a synopsis line, then one line per option with its default.</summary>
    /// <value>Default: empty.</value>
    public string Usage { get; init; } = "";
}
