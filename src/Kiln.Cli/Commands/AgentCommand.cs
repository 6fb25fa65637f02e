using System.CommandLine;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln agent</c>: torchrun's job, the elastic agent a replica runs (not written yet).</summary>
internal static class AgentCommand
{
    public static Command Create() => new("agent", "The elastic agent a replica runs (torchrun's job); not available yet.") { Hidden = true };
}
