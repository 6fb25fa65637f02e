using System.CommandLine;
using System.Globalization;
using Kiln.Runtime;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln doctor</c>: one line per fact about what this host offers Kiln.</summary>
internal static class DoctorCommand
{
    public static Command Create()
    {
        var gemm = new Option<double?>("--gemm")
        {
            Description = "Also time matrix multiplies on every device for this many seconds each and print GFLOP/s.",
            HelpName = "seconds",
        };
        gemm.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && double.TryParse(result.Tokens[^1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds)
                && seconds is <= 0 or > 3600)
            {
                result.AddError("--gemm must be between 0 and 3600 seconds.");
            }
        });
        var gemmSize = new Option<int?>("--gemm-size")
        {
            Description = "Side of the square matrices for --gemm (default: 1024 on CPU, 8192 on GPUs).",
            HelpName = "n",
        };
        gemmSize.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && int.TryParse(result.Tokens[^1].Value, CultureInfo.InvariantCulture, out int n) && n is < 16 or > 65536)
            {
                result.AddError("--gemm-size must be between 16 and 65536.");
            }
        });

        var command = new Command("doctor", "Show what this host offers Kiln: runtimes, libtorch, devices, ONNX Runtime, MPI, NCCL.")
        {
            gemm,
            gemmSize,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter output = parse.InvocationConfiguration.Output;
            TorchRuntimeOptions options = TorchRuntimeOptions.FromEnvironment();
            foreach (HostFact fact in HostReport.Collect(options, cancellationToken))
            {
                await output.WriteLineAsync(fact.ToString().AsMemory(), cancellationToken).ConfigureAwait(false);
            }
            if (parse.GetValue(gemm) is double seconds)
            {
                await RunGemmAsync(output, TimeSpan.FromSeconds(seconds), parse.GetValue(gemmSize), cancellationToken).ConfigureAwait(false);
            }
            return 0;
        });
        return command;
    }

    private static async Task RunGemmAsync(TextWriter output, TimeSpan duration, int? size, CancellationToken cancellationToken)
    {
        if (TorchRuntime.Current is not { } libtorch)
        {
            await output.WriteLineAsync("gemm: skipped (libtorch did not load)").ConfigureAwait(false);
            return;
        }
        IEnumerable<ComputeDevice> devices = libtorch.CudaAvailable
            ? DeviceCatalog.Current.All.Where(d => d.Kind == DeviceKind.Cpu || d.Index < libtorch.CudaDevices)
            : [DeviceCatalog.Current.Cpu];
        foreach (ComputeDevice device in devices)
        {
            int n = size ?? (device.Kind == DeviceKind.Cuda ? 8192 : 1024);
            await output.WriteLineAsync($"gemm: timing {device.TorchName} for {duration.TotalSeconds:0.##} s").ConfigureAwait(false);
            await output.FlushAsync(cancellationToken).ConfigureAwait(false);
            GemmResult result = await GemmProbe.MeasureAsync(device, n, duration, cancellationToken).ConfigureAwait(false);
            await output.WriteLineAsync($"gemm: {result}").ConfigureAwait(false);
        }
    }
}
