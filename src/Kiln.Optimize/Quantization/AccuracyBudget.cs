using Kiln.Optimize.Verification;

namespace Kiln.Optimize.Quantization;

/// <summary>What the budgeted quantization kept in float, and the accuracy it reached.</summary>
internal sealed record BudgetResult(OnnxModel Model, IReadOnlyList<string> Quantized, IReadOnlyList<string> KeptFloat, double Cosine, bool BudgetMet, IReadOnlyDictionary<string, double> NodeErrors);

/// <summary>
/// Quantizes under an accuracy budget (the lowest mean cosine between the float model's and the quantized model's
/// outputs over sample inputs): when quantizing every MatMul misses it, each node's own contribution is measured by
/// quantizing that node alone, and nodes are left in float, worst first, until the budget is met. When even that does
/// not meet it, the float model is the best within budget and the result says so.
/// </summary>
internal sealed class AccuracyBudget(double minimumCosine, bool perChannel = true, IReadOnlySet<string>? opTypes = null, Func<ISet<string>, IQuantizer>? quantizer = null)
{
    public BudgetResult Quantize(OnnxModel model, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> samples)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfZero(samples.Count);
        Dictionary<string, TensorValue>[] reference = [.. samples.Select(s => ModelRunner.Run(model, s))];

        (OnnxModel all, List<string> candidates) = Quantized(model, []);
        double cosine = MeanCosine(all, samples, reference);
        if (cosine >= minimumCosine)
        {
            return new BudgetResult(all, candidates, [], cosine, true, new Dictionary<string, double>());
        }
        var errors = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string node in candidates)
        {
            (OnnxModel alone, _) = Quantized(model, [.. candidates.Where(c => c != node)]);
            errors[node] = 1 - MeanCosine(alone, samples, reference);
        }
        var kept = new List<string>();
        foreach (string node in errors.OrderByDescending(e => e.Value).Select(e => e.Key))
        {
            kept.Add(node);
            (OnnxModel candidate, List<string> quantized) = Quantized(model, kept);
            cosine = quantized.Count == 0 ? 1 : MeanCosine(candidate, samples, reference);
            if (cosine >= minimumCosine)
            {
                return new BudgetResult(candidate, quantized, kept, cosine, true, errors);
            }
        }
        return new BudgetResult(model.Clone(), [], kept, 1, minimumCosine <= 1, errors);
    }

    private (OnnxModel Model, List<string> Quantized) Quantized(OnnxModel model, IEnumerable<string> exclude)
    {
        OnnxModel copy = model.Clone();
        var excluded = new HashSet<string>(exclude, StringComparer.Ordinal);
        IQuantizer q = quantizer?.Invoke(excluded) ?? new DynamicInt8Quantizer { PerChannel = perChannel, OpTypes = opTypes ?? DynamicInt8Quantizer.DefaultOpTypes, Exclude = excluded };
        List<string> quantized = q.Apply(copy);
        return (copy, quantized);
    }

    private static double MeanCosine(OnnxModel model, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> samples, Dictionary<string, TensorValue>[] reference)
    {
        double sum = 0;
        for (int i = 0; i < samples.Count; i++)
        {
            sum += ModelRunner.Cosine(reference[i], ModelRunner.Run(model, samples[i]));
        }
        return sum / samples.Count;
    }
}
