using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Removes Identity nodes (and Dropout in inference, whose only used output is its input) by making their consumers
/// read the node's input directly. An Identity that names a graph output stays unless its input is produced by a node
/// that feeds nothing else, in which case that node's output is renamed to the graph output.
/// </summary>
internal sealed class IdentityElimination : IGraphPass
{
    public string Name => "identity-elimination";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        int removed = 0;
        foreach (NodeProto node in graph.Node.ToList())
        {
            if (!IsIdentity(node))
            {
                continue;
            }
            var index = new GraphIndex(graph);
            string input = node.Input[0];
            string output = node.Output[0];
            if (index.GraphOutputs.Contains(output))
            {
                if (!index.Producers.TryGetValue(input, out NodeProto? producer)
                    || index.GraphOutputs.Contains(input)
                    || index.Consumers.GetValueOrDefault(input, []).Count != 1)
                {
                    continue;
                }
                // The producer writes the graph output itself.
                int slot = producer.Output.IndexOf(input);
                producer.Output[slot] = output;
            }
            else
            {
                foreach (NodeProto consumer in index.Consumers.GetValueOrDefault(output, []))
                {
                    for (int i = 0; i < consumer.Input.Count; i++)
                    {
                        if (consumer.Input[i] == output)
                        {
                            consumer.Input[i] = input;
                        }
                    }
                }
            }
            graph.Node.Remove(node);
            removed++;
        }
        return removed;
    }

    private static bool IsIdentity(NodeProto node) =>
        node.Domain is "" or "ai.onnx"
        && node.Input.Count >= 1 && node.Input[0].Length > 0
        && (node.OpType == "Identity" && node.Output.Count == 1
            || node.OpType == "Dropout" && node.Output.Count >= 1 && node.Output.Skip(1).All(o => o.Length == 0) && IsInferenceDropout(node));

    /// <summary>Dropout is an identity unless training_mode is given as an input (opset 12+).</summary>
    private static bool IsInferenceDropout(NodeProto node) => node.Input.Count < 3 || node.Input[2].Length == 0;
}
