namespace Kiln.Runtime;

/// <summary>One fact about this host, as <c>kiln doctor</c> prints it: "name: value".</summary>
/// <param name="Name">What the fact is about ("libtorch", "mpi").</param>
/// <param name="Value">What was found, or plainly why nothing was.</param>
/// <param name="Available">False when an optional part is missing or broken.</param>
public sealed record HostFact(string Name, string Value, bool Available = true)
{
    /// <inheritdoc />
    public override string ToString() => $"{Name}: {Value}";
}
