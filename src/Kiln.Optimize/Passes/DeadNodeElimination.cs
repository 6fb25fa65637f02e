using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>Removes nodes none of whose outputs reach a graph output, then initializers nothing reads; counts both.</summary>
internal sealed class DeadNodeElimination : IGraphPass
{
    public string Name => "dead-node-elimination";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        var live = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var needed = new Stack<string>(index.GraphOutputs);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (needed.Count > 0)
        {
            string value = needed.Pop();
            if (!seen.Add(value) || !index.Producers.TryGetValue(value, out NodeProto? producer) || !live.Add(producer))
            {
                continue;
            }
            foreach (string input in producer.Input.Where(i => i.Length > 0))
            {
                needed.Push(input);
            }
            // Subgraphs (If, Loop, Scan) read outer values by name.
            foreach (string outer in OuterReferences(producer))
            {
                needed.Push(outer);
            }
        }
        int removed = 0;
        foreach (NodeProto node in graph.Node.Where(n => !live.Contains(n)).ToList())
        {
            graph.Node.Remove(node);
            removed++;
        }
        var read = new HashSet<string>(graph.Node.SelectMany(n => n.Input.Concat(OuterReferences(n))), StringComparer.Ordinal);
        read.UnionWith(index.GraphOutputs);
        foreach (TensorProto initializer in graph.Initializer.Where(i => !read.Contains(i.Name) && !index.GraphInputs.Contains(i.Name)).ToList())
        {
            graph.Initializer.Remove(initializer);
            removed++;
        }
        return removed;
    }

    /// <summary>The outer values that a node's subgraphs (If, Loop, Scan) read by name.</summary>
    internal static IEnumerable<string> OuterReferences(NodeProto node) =>
        node.Attribute.SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Append(a.G)).SelectMany(g => g.Node).SelectMany(n => n.Input.Concat(OuterReferences(n)));
}
