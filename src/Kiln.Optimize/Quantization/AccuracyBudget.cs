using System.Globalization;
using Kiln.Optimize.Verification;

namespace Kiln.Optimize.Quantization;

/// <summary>What the budgeted quantization kept in float, and the accuracy it reached.</summary>
/// <param name="Model">The model chosen: the quantized one within budget, or the float model when none is.</param>
/// <param name="Quantized">Nodes quantized in <paramref name="Model"/>.</param>
/// <param name="KeptFloat">Candidate nodes left in float, worst first.</param>
/// <param name="Accuracy">The chosen model's accuracy on all samples.</param>
/// <param name="BudgetMet">Whether every budget holds for <paramref name="Model"/>.</param>
/// <param name="NodeErrors">Each candidate's accuracy with that node alone quantized (empty when quantizing everything met the budget).</param>
/// <param name="Evaluations">Quantized models built and run (the cost of the search).</param>
internal sealed record BudgetResult(
    OnnxModel Model,
    IReadOnlyList<string> Quantized,
    IReadOnlyList<string> KeptFloat,
    AccuracyMeasure Accuracy,
    bool BudgetMet,
    IReadOnlyDictionary<string, AccuracyMeasure> NodeErrors,
    int Evaluations);

/// <summary>
/// Quantizes under accuracy budgets (every <see cref="AccuracyBudgetSpec"/> must hold on the sample inputs), with any
/// <see cref="IQuantizer"/>: when quantizing every candidate misses a budget, each candidate's own contribution is
/// measured, candidates are ranked worst first, and the fewest worst nodes left in float that bring the model within
/// budget are found by a binary search over that ranking. When not even that meets it, the float model is kept and
/// the result says so.
/// </summary>
/// <remarks>
/// A node's contribution is measured with <b>that node alone quantized</b> (every other candidate excluded), not with
/// it alone left in float: alone, its error is measured against the exact float outputs, so even small errors rank
/// cleanly; with the other ~100 nodes quantized, removing one changes the output by less than the noise the others
/// add, and the ranking would be noise. Nodes are ranked by the largest share of any budget's allowance their error
/// uses (<see cref="AccuracyBudgetSpec.Usage"/>), ties by cosine loss. Contributions use the first
/// <see cref="ContributionSamples"/> samples; the search checks the budget on all of them. Cost: one quantized model
/// per candidate (on the subset) plus about log2(candidates) + 1 on all samples.
/// </remarks>
internal sealed class AccuracyBudget
{
    private readonly IReadOnlyList<AccuracyBudgetSpec> _budgets;
    private readonly Func<ISet<string>, IQuantizer> _quantizer;

    /// <param name="budgets">The bounds that must all hold (at least one).</param>
    /// <param name="quantizer">Makes the quantizer to apply, given the nodes it must leave in float.</param>
    public AccuracyBudget(IReadOnlyList<AccuracyBudgetSpec> budgets, Func<ISet<string>, IQuantizer> quantizer)
    {
        ArgumentNullException.ThrowIfNull(budgets);
        ArgumentNullException.ThrowIfNull(quantizer);
        ArgumentOutOfRangeException.ThrowIfZero(budgets.Count);
        _budgets = budgets;
        _quantizer = quantizer;
    }

    /// <summary>Samples used to measure each node's contribution (the first ones given). Default 2.</summary>
    public int ContributionSamples { get; init; } = 2;

    public BudgetResult Quantize(OnnxModel model, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> samples, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfZero(samples.Count);
        string classOutput = model.Proto.Graph.Output.Count > 0 ? model.Proto.Graph.Output[0].Name : "";
        IReadOnlyDictionary<string, TensorValue>[] reference = [.. samples.Select(s => ModelRunner.Run(model, s))];
        bool floatMeets = AccuracyMeasure.Exact.Meets(_budgets);
        int evaluations = 0;

        (OnnxModel all, List<string> candidates) = Quantized(model, []);
        if (candidates.Count == 0)
        {
            return new BudgetResult(model.Clone(), [], [], AccuracyMeasure.Exact, floatMeets, new Dictionary<string, AccuracyMeasure>(), evaluations);
        }
        AccuracyMeasure accuracy = Measure(all, samples.Count);
        progress?.Report($"all {candidates.Count} node(s) quantized: {accuracy}");
        if (accuracy.Meets(_budgets))
        {
            return new BudgetResult(all, candidates, [], accuracy, true, new Dictionary<string, AccuracyMeasure>(), evaluations);
        }

        int subset = Math.Clamp(ContributionSamples, 1, samples.Count);
        var errors = new Dictionary<string, AccuracyMeasure>(StringComparer.Ordinal);
        foreach (string node in candidates)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (OnnxModel alone, _) = Quantized(model, candidates.Where(c => c != node));
            errors[node] = Measure(alone, subset);
            progress?.Report($"contribution {errors.Count}/{candidates.Count}: {node}: {errors[node]}");
        }
        string[] ranked = [.. candidates
            .OrderByDescending(n => errors[n].Usage(_budgets))
            .ThenByDescending(n => 1 - errors[n].Cosine)
            .ThenBy(n => n, StringComparer.Ordinal)];

        // The fewest worst nodes in float that meet the budget: all of them (the float model) meets it whenever the
        // float model can; binary search below that, keeping the best model that met it.
        (int Count, OnnxModel Model, List<string> Quantized, AccuracyMeasure Accuracy)? best = null;
        int lo = 1, hi = ranked.Length;
        while (lo < hi)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int mid = (lo + hi) / 2;
            (OnnxModel candidate, List<string> quantized) = Quantized(model, ranked.Take(mid));
            AccuracyMeasure measured = Measure(candidate, samples.Count);
            bool met = measured.Meets(_budgets);
            progress?.Report(string.Create(CultureInfo.InvariantCulture, $"{mid} node(s) in float: {measured}{(met ? " — within budget" : "")}"));
            if (met)
            {
                best = (mid, candidate, quantized, measured);
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }
        if (best is { } found)
        {
            return new BudgetResult(found.Model, found.Quantized, ranked[..found.Count], found.Accuracy, true, errors, evaluations);
        }
        // Only the float model is left (every candidate in float).
        return new BudgetResult(model.Clone(), [], ranked, AccuracyMeasure.Exact, floatMeets, errors, evaluations);

        AccuracyMeasure Measure(OnnxModel candidate, int count)
        {
            evaluations++;
            IReadOnlyDictionary<string, TensorValue>[] actual = [.. samples.Take(count).Select(s => ModelRunner.Run(candidate, s))];
            return AccuracyMetrics.Compare(reference[..count], actual, classOutput);
        }
    }

    private (OnnxModel Model, List<string> Quantized) Quantized(OnnxModel model, IEnumerable<string> exclude)
    {
        OnnxModel copy = model.Clone();
        List<string> quantized = _quantizer(new HashSet<string>(exclude, StringComparer.Ordinal)).Apply(copy);
        return (copy, quantized);
    }
}
