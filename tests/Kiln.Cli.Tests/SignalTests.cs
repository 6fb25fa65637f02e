using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Kiln.Cli.Tests;

/// <summary>Ctrl+C and SIGTERM sent to a real <c>kiln</c> process.</summary>
public sealed partial class SignalTests
{
    private const int Sigint = 2;
    private const int Sigterm = 15;

    [Theory]
    [InlineData(Sigint, 130)]
    [InlineData(Sigterm, 143)]
    public async Task Signal_DuringALongVerb_EndsItCleanlyWithTheShellsCode(int signal, int expectedExitCode)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "kiln.dll"), "doctor", "--gemm", "600", "--gemm-size", "256" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using Process kiln = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Task<string> errors = kiln.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            string? line;
            do
            {
                line = await kiln.StandardOutput.ReadLineAsync(timeout.Token);
            }
            while (line is not null && !line.StartsWith("gemm: timing", StringComparison.Ordinal));
            line.ShouldNotBeNull("kiln ended before the long verb started");

            Kill(kiln.Id, signal).ShouldBe(0);
            await kiln.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!kiln.HasExited)
            {
                kiln.Kill();
            }
        }

        kiln.ExitCode.ShouldBe(expectedExitCode);
        (await errors).ShouldContain("kiln: interrupted");
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);
}
