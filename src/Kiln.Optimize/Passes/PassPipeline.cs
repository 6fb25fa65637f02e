using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Passes;

/// <summary>What one pass did: kept, or rolled back with the reason.</summary>
internal sealed record PassOutcome(string Pass, int Changes, int NodesBefore, int NodesAfter, bool Kept, string? Reason, double MaxAbsDifference);

/// <summary>
/// Runs passes one after another, each on a copy of the model, and keeps a pass only when ONNX Runtime still loads the
/// result and its outputs on the same inputs stay within the tolerance of the model before the pass.
/// </summary>
internal sealed class PassPipeline(IReadOnlyList<IGraphPass> passes, double tolerance = 1e-5)
{
    /// <param name="model">The model; left as it is.</param>
    /// <param name="inputs">Inputs to compare on; generated from the input types when null.</param>
    /// <param name="reference">The outputs to stay close to; the model's own on <paramref name="inputs"/> when null.</param>
    public (OnnxModel Model, List<PassOutcome> Outcomes) Run(OnnxModel model, IReadOnlyDictionary<string, TensorValue>? inputs = null, IReadOnlyDictionary<string, TensorValue>? reference = null)
    {
        inputs ??= ModelRunner.SampleInputs(model);
        reference ??= ModelRunner.Run(model, inputs);
        var outcomes = new List<PassOutcome>();
        OnnxModel current = model;
        foreach (IGraphPass pass in passes)
        {
            OnnxModel candidate = current.Clone();
            int before = candidate.NodeCount;
            int changes;
            try
            {
                changes = pass.Apply(candidate.Proto);
            }
            catch (OptimizeException e)
            {
                outcomes.Add(new PassOutcome(pass.Name, 0, before, before, false, e.Message, 0));
                continue;
            }
            if (changes == 0)
            {
                outcomes.Add(new PassOutcome(pass.Name, 0, before, before, true, null, 0));
                continue;
            }
            double difference;
            try
            {
                difference = ModelRunner.MaxAbsDifference(reference, ModelRunner.Run(candidate, inputs));
            }
            catch (Exception e) when (e is OnnxRuntimeException or Kiln.Runtime.KilnRuntimeException)
            {
                outcomes.Add(new PassOutcome(pass.Name, changes, before, candidate.NodeCount, false, $"ONNX Runtime rejected the result: {e.Message}", double.NaN));
                continue;
            }
            bool kept = difference <= tolerance;
            outcomes.Add(new PassOutcome(pass.Name, changes, before, candidate.NodeCount, kept,
                kept ? null : $"outputs moved by {difference:G3} (tolerance {tolerance:G3})", difference));
            if (kept)
            {
                current = candidate;
            }
        }
        return (current, outcomes);
    }
}
