using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Replaces an If whose condition is a constant (an initializer no input can override) by the nodes of the branch it
/// takes. Values produced inside the branch are renamed so they cannot clash with the outer graph; the branch's outputs
/// become the If's outputs; values the branch reads from outer scopes keep their names.
/// </summary>
internal sealed class IfElimination : IGraphPass
{
    public string Name => "if-elimination";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        int inlined = 0;
        for (int i = 0; i < graph.Node.Count; i++)
        {
            NodeProto node = graph.Node[i];
            if (node.OpType != "If" || node.Domain is not ("" or "ai.onnx") || Condition(model, node.Input[0]) is not { } taken)
            {
                continue;
            }
            GraphProto branch = node.Attribute.First(a => a.Name == (taken ? "then_branch" : "else_branch")).G;
            var names = new NameScope(graph);
            var renames = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string produced in branch.Node.SelectMany(n => n.Output).Concat(branch.Initializer.Select(t => t.Name)).Where(n => n.Length > 0))
            {
                renames[produced] = names.Next($"{node.Name}_{produced}");
            }
            for (int k = 0; k < branch.Output.Count; k++)
            {
                renames[branch.Output[k].Name] = node.Output[k];
            }
            foreach (TensorProto initializer in branch.Initializer)
            {
                TensorProto copy = initializer.Clone();
                copy.Name = renames[initializer.Name];
                Initializers.Add(model, copy);
            }
            var nodes = new List<NodeProto>();
            foreach (NodeProto inner in branch.Node)
            {
                NodeProto copy = inner.Clone();
                for (int k = 0; k < copy.Input.Count; k++)
                {
                    copy.Input[k] = renames.GetValueOrDefault(copy.Input[k], copy.Input[k]);
                }
                for (int k = 0; k < copy.Output.Count; k++)
                {
                    copy.Output[k] = renames.GetValueOrDefault(copy.Output[k], copy.Output[k]);
                }
                copy.Name = names.Next($"{node.Name}/{inner.Name}");
                Rename(copy, renames);
                nodes.Add(copy);
            }
            // A branch output that is an outer value or an initializer needs an Identity to carry its name.
            for (int k = 0; k < branch.Output.Count; k++)
            {
                string inside = branch.Output[k].Name;
                if (!branch.Node.Any(n => n.Output.Contains(inside)))
                {
                    var identity = new NodeProto { OpType = "Identity", Name = names.Next($"{node.Name}/out{k}") };
                    identity.Input.Add(branch.Initializer.Any(t => t.Name == inside) ? renames[inside] : inside);
                    identity.Output.Add(node.Output[k]);
                    nodes.Add(identity);
                }
            }
            graph.Node.RemoveAt(i);
            for (int k = 0; k < nodes.Count; k++)
            {
                graph.Node.Insert(i + k, nodes[k]);
            }
            i += nodes.Count - 1;
            inlined++;
        }
        return inlined;
    }

    /// <summary>The condition's value when it is a one-element constant, else null.</summary>
    private static bool? Condition(ModelProto model, string name)
    {
        if (Initializers.FindConstant(model, name) is not { } tensor || Initializers.ElementCount(tensor) != 1)
        {
            return null;
        }
        return tensor.DataType switch
        {
            (int)TensorProto.Types.DataType.Bool or (int)TensorProto.Types.DataType.Uint8 or (int)TensorProto.Types.DataType.Int8 =>
                tensor.RawData.Length > 0 ? tensor.RawData[0] != 0 : tensor.Int32Data.Count > 0 && tensor.Int32Data[0] != 0,
            _ => null,
        };
    }

    /// <summary>Nested subgraphs may read values of the inlined branch by name.</summary>
    private static void Rename(NodeProto node, Dictionary<string, string> renames)
    {
        foreach (AttributeProto attribute in node.Attribute)
        {
            foreach (GraphProto sub in attribute.Graphs.Append(attribute.G).Where(g => g is not null))
            {
                foreach (NodeProto inner in sub.Node)
                {
                    for (int k = 0; k < inner.Input.Count; k++)
                    {
                        if (renames.TryGetValue(inner.Input[k], out string? renamed) && !sub.Node.Any(n => n.Output.Contains(inner.Input[k])))
                        {
                            inner.Input[k] = renamed;
                        }
                    }
                    Rename(inner, renames);
                }
            }
        }
    }
}
