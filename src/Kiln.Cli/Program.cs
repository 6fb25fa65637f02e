using System.Runtime.InteropServices;

namespace Kiln.Cli;

/// <summary>The entry point of <c>kiln</c>.</summary>
internal static class Program
{
    /// <summary>Exit code after Ctrl+C (SIGINT), as shells report a process ended by that signal.</summary>
    public const int InterruptedExitCode = 130;

    /// <summary>Exit code after SIGTERM.</summary>
    public const int TerminatedExitCode = 143;

    public static async Task<int> Main(string[] args)
    {
        using var cancellation = new CancellationTokenSource();
        int signalExitCode = 0;
        void OnSignal(PosixSignalContext context, int exitCode)
        {
            if (cancellation.IsCancellationRequested)
            {
                // A second Ctrl+C while the verb winds down ends the process at once.
                return;
            }
            context.Cancel = true;
            Volatile.Write(ref signalExitCode, exitCode);
            cancellation.Cancel();
        }
        using PosixSignalRegistration sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => OnSignal(c, InterruptedExitCode));
        using PosixSignalRegistration sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => OnSignal(c, TerminatedExitCode));

        int exitCode = await KilnCommandLine.InvokeAsync(args, Console.Out, Console.Error, cancellation.Token).ConfigureAwait(false);
        if (cancellation.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync("kiln: interrupted").ConfigureAwait(false);
            return Volatile.Read(ref signalExitCode);
        }
        return exitCode;
    }
}
