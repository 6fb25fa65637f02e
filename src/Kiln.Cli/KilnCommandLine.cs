using System.CommandLine;
using System.CommandLine.Invocation;
using System.Reflection;
using Kiln.Cli.Commands;

namespace Kiln.Cli;

/// <summary>The verbs of <c>kiln</c>, each a thin shell over a library.</summary>
internal static class KilnCommandLine
{
    /// <summary>Builds the root command with every verb.</summary>
    public static RootCommand Build()
    {
        var root = new RootCommand("Kiln: PyTorch-family models from research to production in .NET.");
        // The default prints the entry assembly's version, which is a test host's under a test runner.
        root.Options.OfType<VersionOption>().Single().Action = new VersionAction();
        root.Subcommands.Add(DoctorCommand.Create());
        root.Subcommands.Add(DataCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(ArchiveCommand.Create());
        root.Subcommands.Add(OptimizeCommand.Create());
        foreach (Command command in LaunchCommands.Create())
        {
            root.Subcommands.Add(command);
        }
        root.Subcommands.Add(AgentCommand.Create());
        return root;
    }

    /// <summary>Parses <paramref name="args"/> and runs the verb, writing to the given streams.</summary>
    /// <returns>The verb's exit code: 0 on success, 1 for failures, 2 for command lines that do not parse (as argparse, and so torchrun and TorchX, do).</returns>
    public static Task<int> InvokeAsync(string[] args, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var configuration = new InvocationConfiguration
        {
            Output = output,
            Error = error,
            // Program handles SIGINT/SIGTERM itself so that every verb ends with 130/143.
            ProcessTerminationTimeout = null,
        };
        ParseResult parsed = Build().Parse(args);
        return parsed.Errors.Count > 0 ? ParseErrorAsync(parsed, configuration, cancellationToken) : parsed.InvokeAsync(configuration, cancellationToken);
    }

    private static async Task<int> ParseErrorAsync(ParseResult parsed, InvocationConfiguration configuration, CancellationToken cancellationToken)
    {
        await parsed.InvokeAsync(configuration, cancellationToken).ConfigureAwait(false); // prints the errors and the usage
        return UsageExitCode;
    }

    /// <summary>The exit code of a command line that does not parse.</summary>
    public const int UsageExitCode = 2;

    private sealed class VersionAction : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            string version = typeof(KilnCommandLine).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
            parseResult.InvocationConfiguration.Output.WriteLine(version);
            return 0;
        }
    }
}
