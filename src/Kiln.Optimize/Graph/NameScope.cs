using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Graph;

/// <summary>Hands out value and node names that a graph does not use yet (stem, stem_2, stem_3…), each once.</summary>
internal sealed class NameScope
{
    private readonly HashSet<string> _used;

    public NameScope(GraphProto graph) =>
        _used = new HashSet<string>(
            graph.Initializer.Select(i => i.Name)
                .Concat(graph.Input.Select(i => i.Name))
                .Concat(graph.Output.Select(o => o.Name))
                .Concat(graph.Node.SelectMany(n => n.Input.Concat(n.Output)))
                .Concat(graph.Node.Select(n => n.Name)),
            StringComparer.Ordinal);

    public string Next(string stem)
    {
        string name = stem;
        for (int k = 2; !_used.Add(name); k++)
        {
            name = $"{stem}_{k}";
        }
        return name;
    }
}
