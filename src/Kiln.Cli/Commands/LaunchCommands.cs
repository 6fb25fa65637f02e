using System.CommandLine;

namespace Kiln.Cli.Commands;

/// <summary>TorchX's verbs over Kiln.Launch: run, status, log, cancel, list, describe, builtins (not written yet).</summary>
internal static class LaunchCommands
{
    public static IEnumerable<Command> Create() => [];
}
