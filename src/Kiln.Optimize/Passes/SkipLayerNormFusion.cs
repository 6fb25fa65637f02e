using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// A residual Add followed by layer normalization over the last axis → ONNX Runtime's com.microsoft.SkipLayerNormalization.
/// The normalization may be a LayerNormalization node (axis −1) or the decomposed form exporters write
/// (ReduceMean, Sub, Pow 2, ReduceMean, Add ε, Sqrt, Div, Mul γ, Add β). The Add's two inputs must have the same
/// inferred 3-D shape with a known last dimension equal to γ's (and β's) length; a bias Add (1-D constant) before one
/// of them, read only by the residual Add, becomes the fused node's bias input (unless <c>foldBias</c> is false). When the sum has other readers it is
/// the fused node's fourth output. Decomposed normalizations without such an Add become LayerNormalization at opset 17+.
/// </summary>
internal sealed class SkipLayerNormFusion(bool foldBias = true) : IGraphPass
{
    public string Name => "skip-layernorm-fusion";

    private sealed record Norm(List<NodeProto> Nodes, string Input, string Gamma, string? Beta, float Epsilon, string Output, List<NodeProto> InputReaders);

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        Dictionary<string, InferredType> types = ShapeInference.Infer(model);
        var removed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        int changes = 0;
        bool skips = false;
        foreach (NodeProto node in graph.Node.ToList())
        {
            if (removed.Contains(node))
            {
                continue;
            }
            Norm? norm = node.OpType switch
            {
                "ReduceMean" when IsDefaultDomain(node) => Decomposed(model, index, types, node),
                "LayerNormalization" when IsDefaultDomain(node) => Node(model, index, types, node),
                _ => null,
            };
            if (norm is null || norm.Nodes.Any(removed.Contains))
            {
                continue;
            }
            var scope = new NameScope(graph);
            NodeProto fused;
            List<NodeProto> nodes = norm.Nodes;
            if (Skip(model, index, types, norm, foldBias) is (NodeProto add, string a, string b, var biasAdd, var bias))
            {
                fused = new NodeProto { OpType = "SkipLayerNormalization", Domain = MicrosoftDomain, Name = scope.Next($"SkipLayerNorm_{node.Name}") };
                fused.Input.AddRange([a, b, norm.Gamma, norm.Beta ?? "", bias ?? ""]);
                while (fused.Input[^1].Length == 0)
                {
                    fused.Input.RemoveAt(fused.Input.Count - 1);
                }
                fused.Output.Add(norm.Output);
                bool sumRead = Readers(index, norm.Input).Count > norm.InputReaders.Count || index.GraphOutputs.Contains(norm.Input);
                if (sumRead)
                {
                    fused.Output.AddRange(["", "", norm.Input]);
                }
                nodes = biasAdd is null ? [add, .. nodes] : [biasAdd, add, .. nodes];
                skips = true;
            }
            else if (node.OpType == "ReduceMean" && Opset(model) >= 17)
            {
                fused = new NodeProto { OpType = "LayerNormalization", Name = scope.Next($"LayerNorm_{node.Name}") };
                fused.Input.AddRange(norm.Beta is null ? [norm.Input, norm.Gamma] : [norm.Input, norm.Gamma, norm.Beta]);
                fused.Output.Add(norm.Output);
                fused.Attribute.Add(IntAttribute("axis", -1));
            }
            else
            {
                continue;
            }
            fused.Attribute.Add(FloatAttribute("epsilon", norm.Epsilon));
            int position = nodes.Max(n => graph.Node.IndexOf(n));
            graph.Node.Insert(position + 1, fused);
            foreach (NodeProto old in nodes)
            {
                graph.Node.Remove(old);
                removed.Add(old);
                foreach (string output in old.Output.Where(o => !fused.Output.Contains(o)))
                {
                    Initializers.ForgetValue(graph, output);
                }
            }
            changes += nodes.Count + 1;
        }
        // The chains' constants (√2, 1, ½, ε…) go when nothing else reads them.
        Initializers.RemoveUnread(graph, removed.SelectMany(n => n.Input));
        if (skips)
        {
            UseMicrosoftDomain(model);
        }
        return changes;
    }

    /// <summary>The last axis only, from the axes attribute (or, from opset 18, the axes input).</summary>
    private static bool ReducesLastAxis(ModelProto model, GraphIndex index, NodeProto reduce, int rank)
    {
        if (IntAttributeOf(reduce, "keepdims") is 0)
        {
            return false;
        }
        long[]? axes = Opset(model) >= 18
            ? reduce.Input.Count > 1 && Constant(model, index, reduce.Input[1]) is { } t ? [.. t.Int64Data.Count > 0 ? t.Int64Data : Enumerable.Range(0, t.RawData.Length / 8).Select(i => BitConverter.ToInt64(t.RawData.Span[(i * 8)..]))] : null
            : IntsAttributeOf(reduce, "axes");
        return axes is [long axis] && (axis == -1 || axis == rank - 1);
    }

    private static Norm? Decomposed(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto mean)
    {
        string x = mean.Input[0];
        if (types.GetValueOrDefault(x)?.Shape is not { Length: > 0 } shape || !ReducesLastAxis(model, index, mean, shape.Length)
            || Sole(index, mean.Output[0], "Sub") is not { } sub || sub.Input[0] != x || sub.Input[1] != mean.Output[0])
        {
            return null;
        }
        string d = sub.Output[0];
        List<NodeProto> readers = Readers(index, d);
        if (index.GraphOutputs.Contains(d) || readers.Count != 2 || readers.FirstOrDefault(r => Is(r, "Pow")) is not { } pow
            || readers.FirstOrDefault(r => Is(r, "Div")) is not { } div || pow.Input[0] != d || !Near(Scalar(model, index, pow.Input[1]), 2)
            || div.Input[0] != d
            || Sole(index, pow.Output[0], "ReduceMean") is not { } variance || !ReducesLastAxis(model, index, variance, shape.Length)
            || Sole(index, variance.Output[0], "Add") is not { } plusEpsilon || Other(plusEpsilon, variance.Output[0]) is not { } epsilonName
            || Scalar(model, index, epsilonName) is not { } epsilon
            || Sole(index, plusEpsilon.Output[0], "Sqrt") is not { } sqrt || Sole(index, sqrt.Output[0], "Div") != div || div.Input[1] != sqrt.Output[0]
            || Sole(index, div.Output[0], "Mul") is not { } scale || Other(scale, div.Output[0]) is not { } gamma
            || !IsVector(model, index, gamma, shape[^1]))
        {
            return null;
        }
        var nodes = new List<NodeProto> { mean, sub, pow, variance, plusEpsilon, sqrt, div, scale };
        string output = scale.Output[0];
        string? beta = null;
        if (Sole(index, output, "Add") is { } shift && Other(shift, output) is { } b && IsVector(model, index, b, shape[^1]))
        {
            nodes.Add(shift);
            beta = b;
            output = shift.Output[0];
        }
        return new Norm(nodes, x, gamma, beta, (float)epsilon, output, [mean, sub]);
    }

    private static Norm? Node(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto norm)
    {
        string x = norm.Input[0];
        if (types.GetValueOrDefault(x)?.Shape is not { Length: > 0 } shape || norm.Input.Count < 2
            || norm.Output.Skip(1).Any(o => o.Length > 0) || IntAttributeOf(norm, "axis") is { } axis && axis != -1 && axis != shape.Length - 1
            || IntAttributeOf(norm, "stash_type") is { } stash && stash != 1 || !IsVector(model, index, norm.Input[1], shape[^1]))
        {
            return null;
        }
        string? beta = norm.Input.Count > 2 && norm.Input[2].Length > 0 ? norm.Input[2] : null;
        if (beta is not null && !IsVector(model, index, beta, shape[^1]))
        {
            return null;
        }
        float epsilon = norm.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
        return new Norm([norm], x, norm.Input[1], beta, epsilon, norm.Output[0], [norm]);
    }

    private static bool IsVector(ModelProto model, GraphIndex index, string name, Dim length) =>
        Constant(model, index, name) is { Dims.Count: 1 } t && t.DataType == (int)TensorProto.Types.DataType.Float && length.IsKnown && t.Dims[0] == length.Value;

    /// <summary>The residual Add feeding the normalization: two 3-D inputs of the same shape, optionally one of them after a bias Add.</summary>
    private static (NodeProto Add, string A, string B, NodeProto? BiasAdd, string? Bias)? Skip(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, Norm norm, bool foldBias)
    {
        if (Producer(index, norm.Input) is not { } add || !Is(add, "Add") || add.Input.Count != 2
            || add.Input[0] == add.Input[1])
        {
            return null;
        }
        string a = add.Input[0], b = add.Input[1];
        if (types.GetValueOrDefault(a) is not { Shape: { Length: 3 } sa } ta || types.GetValueOrDefault(b) is not { Shape: { Length: 3 } sb } tb
            || ta.ElemType != (int)TensorProto.Types.DataType.Float || tb.ElemType != ta.ElemType
            || !sa.Zip(sb).All(p => p.First.SameAs(p.Second)) || Constant(model, index, a) is not null || Constant(model, index, b) is not null)
        {
            return null;
        }
        foreach ((string biased, string other) in foldBias ? new[] { (a, b), (b, a) } : [])
        {
            if (Producer(index, biased) is { } biasAdd && Is(biasAdd, "Add") && Sole(index, biased, "Add") == add)
            {
                foreach (string bias in biasAdd.Input)
                {
                    if (Other(biasAdd, bias) is { } input && IsVector(model, index, bias, sa[^1]) && Constant(model, index, input) is null
                        && types.GetValueOrDefault(input)?.Shape is { Length: 3 } si && si.Zip(sa).All(p => p.First.SameAs(p.Second)))
                    {
                        return (add, input, other, biasAdd, bias);
                    }
                }
            }
        }
        return (add, a, b, null, null);
    }
}
