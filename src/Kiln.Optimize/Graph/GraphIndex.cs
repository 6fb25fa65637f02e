using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Graph;

/// <summary>Who produces and who consumes each value of a graph, and the nodes in topological order.</summary>
internal sealed class GraphIndex
{
    public GraphIndex(GraphProto graph)
    {
        Graph = graph;
        foreach (NodeProto node in graph.Node)
        {
            foreach (string output in node.Output.Where(o => o.Length > 0))
            {
                Producers[output] = node;
            }
            foreach (string input in node.Input.Where(i => i.Length > 0))
            {
                if (!Consumers.TryGetValue(input, out List<NodeProto>? list))
                {
                    Consumers[input] = list = [];
                }
                list.Add(node);
            }
        }
        GraphOutputs = [.. graph.Output.Select(o => o.Name)];
        GraphInputs = [.. graph.Input.Select(i => i.Name)];
        Initializers = [.. graph.Initializer.Select(i => i.Name)];
    }

    public GraphProto Graph { get; }

    public Dictionary<string, NodeProto> Producers { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, List<NodeProto>> Consumers { get; } = new(StringComparer.Ordinal);

    public HashSet<string> GraphOutputs { get; }

    public HashSet<string> GraphInputs { get; }

    public HashSet<string> Initializers { get; }

    /// <summary>Kahn's order: every node after the producers of its inputs.</summary>
    /// <exception cref="OptimizeException">The graph has a cycle (names a node on it).</exception>
    public List<NodeProto> TopologicalOrder()
    {
        var pending = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        var ready = new Queue<NodeProto>();
        foreach (NodeProto node in Graph.Node)
        {
            int waits = node.Input.Count(i => i.Length > 0 && Producers.ContainsKey(i));
            pending[node] = waits;
            if (waits == 0)
            {
                ready.Enqueue(node);
            }
        }
        var order = new List<NodeProto>(Graph.Node.Count);
        while (ready.Count > 0)
        {
            NodeProto node = ready.Dequeue();
            order.Add(node);
            foreach (string output in node.Output.Where(o => o.Length > 0))
            {
                foreach (NodeProto consumer in Consumers.GetValueOrDefault(output, []))
                {
                    // A node that reads the same value twice waits for it twice.
                    if (--pending[consumer] == 0)
                    {
                        ready.Enqueue(consumer);
                    }
                }
            }
        }
        if (order.Count != Graph.Node.Count)
        {
            NodeProto stuck = Graph.Node.First(n => pending[n] > 0);
            throw new OptimizeException($"the graph has a cycle through node '{stuck.Name}' ({stuck.OpType})");
        }
        return order;
    }
}
