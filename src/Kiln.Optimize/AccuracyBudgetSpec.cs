using System.Globalization;

namespace Kiln.Optimize;

/// <summary>The accuracy metrics a budget can bound (all measured against the float model on the same inputs).</summary>
public enum AccuracyMetric
{
    /// <summary>Mean over samples of the cosine between all outputs taken as one vector; a budget is a minimum.</summary>
    Cosine,

    /// <summary>
    /// Share of rows whose argmax over the last axis of the first output agrees with the float model's (one row per
    /// sample for [B, C] outputs, B rows per sample otherwise); a budget is a minimum.
    /// </summary>
    Top1,

    /// <summary>Largest absolute difference of any output element over all samples; a budget is a maximum.</summary>
    MaxAbs,
}

/// <summary>One accuracy bound, e.g. <c>cosine&gt;=0.99</c>, <c>top1&gt;=0.99</c> or <c>maxabs&lt;=0.05</c>; immutable.</summary>
/// <param name="Metric">What is measured.</param>
/// <param name="Threshold">The bound: a minimum for cosine and top-1, a maximum for max-abs.</param>
public sealed record AccuracyBudgetSpec(AccuracyMetric Metric, double Threshold)
{
    /// <summary>The forms <see cref="Parse"/> accepts, for error messages.</summary>
    public const string AcceptedForms = "cosine=V or cosine>=V (0 < V ≤ 1), top1=V or top1>=V (0 ≤ V ≤ 1), maxabs=V or maxabs<=V (V ≥ 0)";

    /// <summary>Whether a measured value stays within this bound.</summary>
    public bool IsMet(double value) => Metric == AccuracyMetric.MaxAbs ? value <= Threshold : value >= Threshold;

    /// <summary>
    /// How far a measured error goes into this budget's allowance: 0 for a perfect result, 1 at the bound, above 1
    /// past it (1 − value over 1 − threshold for cosine and top-1, value over threshold for max-abs).
    /// </summary>
    public double Usage(double value)
    {
        double used = Metric == AccuracyMetric.MaxAbs ? value : 1 - value;
        double allowed = Metric == AccuracyMetric.MaxAbs ? Threshold : 1 - Threshold;
        return allowed > 0 ? used / allowed : used > 0 ? double.PositiveInfinity : 0;
    }

    /// <summary>The text form, e.g. <c>cosine&gt;=0.99</c>.</summary>
    public override string ToString() => Metric switch
    {
        AccuracyMetric.Cosine => string.Create(CultureInfo.InvariantCulture, $"cosine>={Threshold}"),
        AccuracyMetric.Top1 => string.Create(CultureInfo.InvariantCulture, $"top1>={Threshold}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"maxabs<={Threshold}"),
    };

    /// <summary>Parses one budget: <c>cosine=0.99</c>, <c>cosine&gt;=0.99</c>, <c>top1=0.99</c>, <c>maxabs=0.05</c>, <c>maxabs&lt;=0.05</c>.</summary>
    /// <exception cref="FormatException">The text is none of <see cref="AcceptedForms"/>; the message names them.</exception>
    public static AccuracyBudgetSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string trimmed = text.Trim();
        int at = trimmed.IndexOfAny(['=', '<', '>']);
        if (at > 0)
        {
            string name = trimmed[..at].Trim().ToLowerInvariant();
            string rest = trimmed[at..];
            (AccuracyMetric Metric, string Operator)? known = name switch
            {
                "cosine" => (AccuracyMetric.Cosine, ">="),
                "top1" => (AccuracyMetric.Top1, ">="),
                "maxabs" => (AccuracyMetric.MaxAbs, "<="),
                _ => null,
            };
            if (known is { } k)
            {
                string number = rest.StartsWith(k.Operator, StringComparison.Ordinal) ? rest[k.Operator.Length..]
                    : rest.StartsWith('=') ? rest[1..]
                    : "";
                if (double.TryParse(number.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && double.IsFinite(value)
                    && k.Metric switch
                    {
                        AccuracyMetric.Cosine => value is > 0 and <= 1,
                        AccuracyMetric.Top1 => value is >= 0 and <= 1,
                        _ => value >= 0,
                    })
                {
                    return new AccuracyBudgetSpec(k.Metric, value);
                }
            }
        }
        throw new FormatException($"budget '{text}' is not one of: {AcceptedForms}");
    }

    /// <summary>Parses several budgets, each text possibly comma-separated (<c>cosine=0.99,top1=0.98</c>).</summary>
    /// <exception cref="FormatException">One of them does not parse.</exception>
    public static IReadOnlyList<AccuracyBudgetSpec> ParseAll(IEnumerable<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return [.. texts.SelectMany(t => t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Select(Parse)];
    }
}
