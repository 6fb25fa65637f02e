using System.Diagnostics;
using System.Globalization;
using static TorchSharp.torch;

namespace Kiln.Distributed.Benchmarks;

/// <summary>
/// all_reduce (sum, float32, in place) timed like nccl-tests: warm-up, then the mean of a timed loop closed by a device
/// synchronisation; bus bandwidth = bytes × 2(n−1)/n ÷ time.
/// </summary>
internal static class BusBandwidth
{
    public static int Run(IProcessGroup group, Device device, int[] megabytes)
    {
        foreach (int mb in megabytes.Length == 0 ? [256] : megabytes)
        {
            long bytes = (long)mb * 1024 * 1024;
            using Tensor t = ones(bytes / 4, dtype: ScalarType.Float32, device: device);
            int iterations = mb >= 64 ? 20 : 100;
            for (int i = 0; i < 5; i++)
            {
                group.AllReduce(t);
            }
            cuda.synchronize(device);
            group.Barrier();
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++)
            {
                group.AllReduce(t);
            }
            cuda.synchronize(device);
            double seconds = clock.Elapsed.TotalSeconds / iterations;
            double algbw = bytes / seconds / 1e9;
            double busbw = algbw * 2 * (group.WorldSize - 1) / group.WorldSize;
            if (group.Rank == 0)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"impl\":\"kiln\",\"op\":\"all_reduce\",\"mb\":{mb},\"world\":{group.WorldSize},\"time_us\":{seconds * 1e6:F1},\"algbw_gbs\":{algbw:F2},\"busbw_gbs\":{busbw:F2}}}"));
            }
        }
        return 0;
    }
}
