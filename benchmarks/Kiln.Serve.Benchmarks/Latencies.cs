using System.Diagnostics;

namespace Kiln.Serve.Benchmarks;

/// <summary>Latency percentiles (nearest rank over every recorded latency, sorted), in microseconds.</summary>
internal sealed record LatencySummary(long Count, double MeanUs, double P50Us, double P90Us, double P99Us, double MaxUs)
{
    public static LatencySummary FromTicks(IEnumerable<List<long>> perThread)
    {
        long[] all = [.. perThread.SelectMany(t => t)];
        if (all.Length == 0)
        {
            return new LatencySummary(0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
        }
        Array.Sort(all);
        double Us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double Rank(double p) => Us(all[Math.Clamp((int)Math.Ceiling(p * all.Length) - 1, 0, all.Length - 1)]);
        return new LatencySummary(all.Length, Us((long)all.Average()), Rank(0.50), Rank(0.90), Rank(0.99), Us(all[^1]));
    }
}
