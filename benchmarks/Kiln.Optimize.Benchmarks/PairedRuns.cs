namespace Kiln.Optimize.Benchmarks;

/// <summary>
/// A float model and its optimized form on the same inputs, taking turns at running first (so neither always meets a
/// warm cache): the latencies of both and, from the first round, the cosine between their outputs.
/// </summary>
internal static class PairedRuns
{
    /// <summary>Latencies in milliseconds of each side, and the cosines of the first round.</summary>
    public sealed record Result(List<double> BaselineTimes, List<double> ResultTimes, double CosineMean, double CosineMin);

    public static Result Run<T>(IReadOnlyList<T> inputs, int rounds, Func<T, (float[] Output, double Milliseconds)> baseline, Func<T, (float[] Output, double Milliseconds)> result)
    {
        var baselineTimes = new List<double>();
        var resultTimes = new List<double>();
        double sum = 0, min = 1;
        for (int round = 0; round < rounds; round++)
        {
            for (int s = 0; s < inputs.Count; s++)
            {
                bool baselineFirst = (s + round) % 2 == 0;
                (float[] a, double ta) = baselineFirst ? baseline(inputs[s]) : result(inputs[s]);
                (float[] b, double tb) = baselineFirst ? result(inputs[s]) : baseline(inputs[s]);
                (baselineFirst ? baselineTimes : resultTimes).Add(ta);
                (baselineFirst ? resultTimes : baselineTimes).Add(tb);
                if (round == 0)
                {
                    double cosine = Cosine(a, b);
                    sum += cosine;
                    min = Math.Min(min, cosine);
                }
            }
        }
        return new Result(baselineTimes, resultTimes, sum / inputs.Count, min);
    }

    public static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>The <paramref name="p"/> quantile (0–1) of <paramref name="values"/>, nearest rank.</summary>
    public static double Percentile(List<double> values, double p)
    {
        double[] sorted = [.. values.Order()];
        return sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
    }
}
