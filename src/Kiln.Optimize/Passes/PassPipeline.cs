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
    public (OnnxModel Model, List<PassOutcome> Outcomes) Run(OnnxModel model, IReadOnlyDictionary<string, TensorValue>? inputs = null)
    {
        inputs ??= ModelRunner.SampleInputs(model);
        Dictionary<string, TensorValue> reference = ModelRunner.Run(model, inputs);
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
