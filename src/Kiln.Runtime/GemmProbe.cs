using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Runtime;

/// <summary>The throughput of square matrix multiplies on one device.</summary>
/// <param name="Device">The device, in PyTorch's notation.</param>
/// <param name="DataType">The element type multiplied ("float32", "bfloat16").</param>
/// <param name="Size">The side of the square matrices.</param>
/// <param name="Iterations">Multiplies timed.</param>
/// <param name="Elapsed">Time they took, after one untimed warm-up multiply.</param>
public sealed record GemmResult(string Device, string DataType, int Size, int Iterations, TimeSpan Elapsed)
{
    /// <summary>Floating-point operations per second (2·n³ per multiply).</summary>
    public double FlopsPerSecond => Iterations * 2.0 * Size * Size * Size / Elapsed.TotalSeconds;

    /// <inheritdoc />
    public override string ToString() =>
        $"{Device} {DataType} {Size}x{Size}: {FlopsPerSecond / 1e9:F1} GFLOP/s ({Iterations} multiplies in {Elapsed.TotalSeconds:F2} s)";
}

/// <summary>Times matrix multiplies through libtorch: a quick check that a device computes at the speed it should.</summary>
public static class GemmProbe
{
    /// <summary>Multiplies two random matrices on <paramref name="device"/> until <paramref name="duration"/> has passed.</summary>
    /// <remarks>
    /// The tensor work runs on a dedicated thread with one dispose scope per multiply, never across an await.
    /// CPU devices use float32, CUDA devices bfloat16 (tensor cores).
    /// </remarks>
    /// <exception cref="OperationCanceledException">The token was cancelled; the work stops after the multiply in flight.</exception>
    public static Task<GemmResult> MeasureAsync(ComputeDevice device, int size, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        TorchRuntime.EnsureInitialized();
        var done = new TaskCompletionSource<GemmResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                done.SetResult(Run(device, size, duration, cancellationToken));
            }
            catch (OperationCanceledException ex)
            {
                done.SetCanceled(ex.CancellationToken);
            }
            catch (Exception ex)
            {
                done.SetException(ex);
            }
        })
        {
            IsBackground = true,
            Name = $"kiln-gemm-{device.TorchName}",
        };
        thread.Start();
        return done.Task;
    }

    private static GemmResult Run(ComputeDevice device, int size, TimeSpan duration, CancellationToken cancellationToken)
    {
        bool cuda = device.Kind == DeviceKind.Cuda;
        ScalarType type = cuda ? ScalarType.BFloat16 : ScalarType.Float32;
        Device target = torch.device(device.TorchName);
        using DisposeScope outer = torch.NewDisposeScope();
        Tensor a = torch.randn(size, size, dtype: type, device: target);
        Tensor b = torch.randn(size, size, dtype: type, device: target);
        Multiply(a, b, cuda);
        var clock = Stopwatch.StartNew();
        int iterations = 0;
        do
        {
            cancellationToken.ThrowIfCancellationRequested();
            Multiply(a, b, cuda);
            iterations++;
        }
        while (clock.Elapsed < duration);
        return new GemmResult(device.TorchName, cuda ? "bfloat16" : "float32", size, iterations, clock.Elapsed);
    }

    private static void Multiply(Tensor a, Tensor b, bool cuda)
    {
        using DisposeScope step = torch.NewDisposeScope();
        _ = a.matmul(b);
        if (cuda)
        {
            torch.cuda.synchronize();
        }
    }
}
