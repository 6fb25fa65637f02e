using System.Diagnostics;

namespace Kiln.Data.Benchmarks;

/// <summary>Runs a per-image step over the corpus, round after round, for at least a given time.</summary>
internal static class Measure
{
    /// <summary>Images per second of <paramref name="step"/> on this thread, after a second of warm-up (tiered JIT settles).</summary>
    public static (double ImagesPerSecond, long Images, double Seconds) Loop(int count, double seconds, Action<int> step)
    {
        var warmup = Stopwatch.StartNew();
        for (int i = 0; i < 1_000_000 && warmup.Elapsed.TotalSeconds < 1.0; i++)
        {
            step(i % count);
        }
        long done = 0;
        var clock = Stopwatch.StartNew();
        for (int round = 0; round < 100_000 && clock.Elapsed.TotalSeconds < seconds; round++)
        {
            for (int i = 0; i < count; i++)
            {
                step(i);
            }
            done += count;
        }
        double elapsed = clock.Elapsed.TotalSeconds;
        return (done / elapsed, done, elapsed);
    }
}
