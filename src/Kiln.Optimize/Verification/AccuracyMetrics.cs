using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Verification;

/// <summary>A model's accuracy against the float model over a set of samples (see <see cref="AccuracyMetric"/>).</summary>
/// <param name="Cosine">Mean over samples of the cosine between all outputs.</param>
/// <param name="Top1">Share of rows of the first output whose argmax agrees.</param>
/// <param name="MaxAbs">Largest absolute difference of any output element.</param>
internal sealed record AccuracyMeasure(double Cosine, double Top1, double MaxAbs)
{
    /// <summary>The float model measured against itself.</summary>
    public static AccuracyMeasure Exact { get; } = new(1, 1, 0);

    public double this[AccuracyMetric metric] => metric switch
    {
        AccuracyMetric.Cosine => Cosine,
        AccuracyMetric.Top1 => Top1,
        _ => MaxAbs,
    };

    /// <summary>Whether every budget holds.</summary>
    public bool Meets(IEnumerable<AccuracyBudgetSpec> budgets) => budgets.All(b => b.IsMet(this[b.Metric]));

    /// <summary>The largest share of a budget's allowance used (see <see cref="AccuracyBudgetSpec.Usage"/>); 0 without budgets.</summary>
    public double Usage(IEnumerable<AccuracyBudgetSpec> budgets) => budgets.Select(b => b.Usage(this[b.Metric])).DefaultIfEmpty(0).Max();

    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"cosine {Cosine:F5}, top-1 {Top1:P1}, max abs {MaxAbs:G3}");
}

/// <summary>Output comparisons: cosine, max abs difference, top-k agreement; and their aggregate over samples.</summary>
internal static class AccuracyMetrics
{
    /// <summary>
    /// Top-k agreement of one output: over each row of the last axis (all other axes flattened into rows), whether the
    /// expected argmax is among the actual output's <paramref name="k"/> largest values. Returns the agreeing rows and
    /// the rows. A scalar is one row of one element.
    /// </summary>
    public static (long Agreeing, long Rows) TopKAgreement(TensorValue expected, TensorValue actual, int k)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        if (!expected.Shape.SequenceEqual(actual.Shape))
        {
            long rowsExpected = expected.Values.Length / Math.Max(1, RowLength(expected));
            return (0, rowsExpected);
        }
        int width = RowLength(expected);
        if (width == 0)
        {
            return (0, 0);
        }
        long rows = expected.Values.Length / width, agreeing = 0;
        for (long r = 0; r < rows; r++)
        {
            var e = new ReadOnlySpan<double>(expected.Values, (int)(r * width), width);
            var a = new ReadOnlySpan<double>(actual.Values, (int)(r * width), width);
            int target = ArgMax(e);
            // The target is in the actual top k when fewer than k values rank above it (ties go to the lower index).
            int above = 0;
            double value = a[target];
            for (int i = 0; i < width && above < k; i++)
            {
                if (a[i] > value || (a[i] == value && i < target) || (double.IsNaN(value) && !double.IsNaN(a[i])))
                {
                    above++;
                }
            }
            if (above < k)
            {
                agreeing++;
            }
        }
        return (agreeing, rows);
    }

    /// <summary>Whether an output looks like class scores: float, [B, C] with C ≥ 2.</summary>
    public static bool LooksLikeClasses(TensorValue value) =>
        value.Type is TensorElementType.Float or TensorElementType.Double or TensorElementType.Float16 && value.Shape.Length == 2 && value.Shape[1] >= 2;

    /// <summary>
    /// Compares runs on the same samples: the mean cosine, top-1 agreement of <paramref name="classOutput"/> over all
    /// rows of all samples (1 when the output has no rows), and the largest absolute difference.
    /// </summary>
    public static AccuracyMeasure Compare(IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> expected, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> actual, string classOutput)
    {
        ArgumentOutOfRangeException.ThrowIfZero(expected.Count);
        ArgumentOutOfRangeException.ThrowIfNotEqual(actual.Count, expected.Count);
        double cosine = 0, maxAbs = 0;
        long agreeing = 0, rows = 0;
        for (int i = 0; i < expected.Count; i++)
        {
            cosine += ModelRunner.Cosine(expected[i], actual[i]);
            maxAbs = Math.Max(maxAbs, ModelRunner.MaxAbsDifference(expected[i], actual[i]));
            if (expected[i].TryGetValue(classOutput, out TensorValue? e))
            {
                (long a, long r) = actual[i].TryGetValue(classOutput, out TensorValue? v) ? TopKAgreement(e, v, 1) : (0, 1);
                agreeing += a;
                rows += r;
            }
        }
        return new AccuracyMeasure(cosine / expected.Count, rows == 0 ? 1 : (double)agreeing / rows, maxAbs);
    }

    private static int RowLength(TensorValue value) => value.Shape.Length == 0 ? 1 : (int)value.Shape[^1];

    private static int ArgMax(ReadOnlySpan<double> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best] || (double.IsNaN(values[best]) && !double.IsNaN(values[i])))
            {
                best = i;
            }
        }
        return best;
    }
}
