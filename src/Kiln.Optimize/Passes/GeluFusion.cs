using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Pointwise activation chains into ONNX Runtime's fused contrib operators (domain com.microsoft):
/// x·½(1 + erf(x/√2)) → Gelu; the same after a bias Add → BiasGelu; x·½(1 + tanh(√(2/π)(x + 0.044715x³))) → FastGelu
/// (the bias, when there is one, as its second input); x·sigmoid(αx) → QuickGelu(α) (α = 1: Swish/SiLU).
/// Every intermediate value must feed only the chain; ½ may multiply x, the bracket, or the product.
/// </summary>
internal sealed class GeluFusion : IGraphPass
{
    private const double Sqrt2 = 1.4142135623730951;
    private const double SqrtTwoOverPi = 0.7978845608028654;

    public string Name => "gelu-fusion";

    private sealed record Match(List<NodeProto> Nodes, string X, string Output, string Op, List<NodeProto> XReaders, float? Alpha = null);

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        Dictionary<string, InferredType>? types = null;
        var removed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        int changes = 0;
        foreach (NodeProto node in graph.Node.ToList())
        {
            if (removed.Contains(node))
            {
                continue;
            }
            Match? match = node.OpType switch
            {
                "Erf" when IsDefaultDomain(node) => MatchErf(model, index, node),
                "Tanh" when IsDefaultDomain(node) => MatchTanh(model, index, node),
                "Sigmoid" when IsDefaultDomain(node) => MatchSigmoid(model, index, node),
                _ => null,
            };
            if (match is null || match.Nodes.Any(removed.Contains))
            {
                continue;
            }
            types ??= ShapeInference.Infer(model);
            var fused = new NodeProto { OpType = match.Op, Domain = MicrosoftDomain, Name = new NameScope(graph).Next($"{match.Op}_{node.Name}") };
            fused.Output.Add(match.Output);
            List<NodeProto> nodes = match.Nodes;
            if (match.Op != "QuickGelu" && Bias(model, index, types, match) is (NodeProto add, string input, string bias))
            {
                fused.OpType = match.Op == "Gelu" ? "BiasGelu" : "FastGelu";
                fused.Input.Add(input);
                fused.Input.Add(bias);
                nodes = [add, .. nodes];
            }
            else
            {
                fused.Input.Add(match.X);
            }
            if (match.Alpha is { } alpha)
            {
                fused.Attribute.Add(FloatAttribute("alpha", alpha));
            }
            // The fused node takes the place of the chain's last node, after everything it reads.
            int position = nodes.Max(n => graph.Node.IndexOf(n));
            graph.Node.Insert(position + 1, fused);
            foreach (NodeProto old in nodes)
            {
                graph.Node.Remove(old);
                removed.Add(old);
                foreach (string output in old.Output.Where(o => o != match.Output))
                {
                    Initializers.ForgetValue(graph, output);
                }
            }
            changes += nodes.Count + 1;
        }
        // The chains' constants (√2, 1, ½, ε…) go when nothing else reads them.
        Initializers.RemoveUnread(graph, removed.SelectMany(n => n.Input));
        if (changes > 0)
        {
            UseMicrosoftDomain(model);
        }
        return changes;
    }

    /// <summary>Erf(x / √2) or Erf(x · 1/√2), then the common tail.</summary>
    private static Match? MatchErf(ModelProto model, GraphIndex index, NodeProto erf)
    {
        if (Producer(index, erf.Input[0]) is not { } scale || Sole(index, scale.Output[0], "Erf") != erf)
        {
            return null;
        }
        string x;
        if (Is(scale, "Div") && Near(Scalar(model, index, scale.Input[1]), Sqrt2))
        {
            x = scale.Input[0];
        }
        else if (Is(scale, "Mul") && ScaledInput(model, index, scale, 1 / Sqrt2) is { } input)
        {
            x = input;
        }
        else
        {
            return null;
        }
        return Tail(model, index, erf, x) is ({ } nodes, { } output, { } reader) ? new Match([scale, erf, .. nodes], x, output, "Gelu", [scale, reader]) : null;
    }

    /// <summary>Tanh(√(2/π) · (x + 0.044715 · x³)) with x³ as Pow(x, 3), then the common tail.</summary>
    private static Match? MatchTanh(ModelProto model, GraphIndex index, NodeProto tanh)
    {
        if (Producer(index, tanh.Input[0]) is not { } scale || !Is(scale, "Mul") || Sole(index, scale.Output[0], "Tanh") != tanh
            || ScaledInput(model, index, scale, SqrtTwoOverPi) is not { } inner
            || Producer(index, inner) is not { } sum || !Is(sum, "Add") || Sole(index, inner, "Mul") != scale)
        {
            return null;
        }
        foreach (string x in sum.Input)
        {
            if (Other(sum, x) is not { } cubic || Producer(index, cubic) is not { } cubicScale || !Is(cubicScale, "Mul")
                || Sole(index, cubic, "Add") != sum || ScaledInput(model, index, cubicScale, 0.044715) is not { } cube
                || Producer(index, cube) is not { } pow || !Is(pow, "Pow") || pow.Input[0] != x
                || !Near(Scalar(model, index, pow.Input[1]), 3) || Sole(index, cube, "Mul") != cubicScale)
            {
                continue;
            }
            if (Tail(model, index, tanh, x) is ({ } nodes, { } output, { } reader))
            {
                return new Match([pow, cubicScale, sum, scale, tanh, .. nodes], x, output, "FastGelu", [pow, sum, reader]);
            }
        }
        return null;
    }

    /// <summary>x · Sigmoid(x), or x · Sigmoid(α·x).</summary>
    private static Match? MatchSigmoid(ModelProto model, GraphIndex index, NodeProto sigmoid)
    {
        if (Sole(index, sigmoid.Output[0], "Mul") is not { } product || Other(product, sigmoid.Output[0]) is not { } x)
        {
            return null;
        }
        string z = sigmoid.Input[0];
        if (z == x)
        {
            return new Match([sigmoid, product], x, product.Output[0], "QuickGelu", [sigmoid, product], 1f);
        }
        if (Producer(index, z) is { } scale && Is(scale, "Mul") && Sole(index, z, "Sigmoid") == sigmoid && Other(scale, x) is { } alphaName
            && Scalar(model, index, alphaName) is { } alpha)
        {
            return new Match([scale, sigmoid, product], x, product.Output[0], "QuickGelu", [scale, product], (float)alpha);
        }
        return null;
    }

    /// <summary>The other input of a Mul whose one input is the constant <paramref name="factor"/>.</summary>
    private static string? ScaledInput(ModelProto model, GraphIndex index, NodeProto mul, double factor)
    {
        foreach (string input in mul.Input)
        {
            if (Other(mul, input) is { } other && Near(Scalar(model, index, input), factor))
            {
                return other;
            }
        }
        return null;
    }

    /// <summary>
    /// (1 + t) times x times ½, in any of the three groupings: (x·(1+t))·½, x·((1+t)·½) or (x·½)·(1+t).
    /// Returns the tail's nodes, its output, and the tail node that reads x.
    /// </summary>
    private static (List<NodeProto>? Nodes, string? Output, NodeProto? XReader) Tail(ModelProto model, GraphIndex index, NodeProto t, string x)
    {
        if (Sole(index, t.Output[0], "Add") is not { } plusOne || Other(plusOne, t.Output[0]) is not { } one || !Near(Scalar(model, index, one), 1)
            || Sole(index, plusOne.Output[0], "Mul") is not { } first || Other(first, plusOne.Output[0]) is not { } partner)
        {
            return (null, null, null);
        }
        if (partner == x)
        {
            return Sole(index, first.Output[0], "Mul") is { } half && Other(half, first.Output[0]) is { } h && Near(Scalar(model, index, h), 0.5)
                ? ([plusOne, first, half], half.Output[0], first) : (null, null, null);
        }
        if (Near(Scalar(model, index, partner), 0.5))
        {
            return Sole(index, first.Output[0], "Mul") is { } times && Other(times, first.Output[0]) == x
                ? ([plusOne, first, times], times.Output[0], times) : (null, null, null);
        }
        if (Producer(index, partner) is { } halfX && Is(halfX, "Mul") && Sole(index, partner, "Mul") == first && ScaledInput(model, index, halfX, 0.5) == x)
        {
            return ([halfX, plusOne, first], first.Output[0], halfX);
        }
        return (null, null, null);
    }

    /// <summary>
    /// x = Add(h, bias) with bias a constant 1-D vector as long as h's last (known) dimension, read by the chain only:
    /// the chain can take the bias (BiasGelu, FastGelu's second input).
    /// </summary>
    private static (NodeProto Add, string Input, string Bias)? Bias(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, Match match)
    {
        if (Producer(index, match.X) is not { } add || !Is(add, "Add") || index.GraphOutputs.Contains(match.X)
            || !Readers(index, match.X).All(r => match.XReaders.Contains(r)) || Readers(index, match.X).Count != match.XReaders.Count)
        {
            return null;
        }
        foreach (string bias in add.Input)
        {
            if (Other(add, bias) is { } input && Constant(model, index, bias) is { Dims.Count: 1 } vector
                && vector.DataType == (int)TensorProto.Types.DataType.Float
                && types.GetValueOrDefault(input) is { Shape: [.., Dim last] } type && type.ElemType == vector.DataType
                && last.IsKnown && last.Value == vector.Dims[0] && Constant(model, index, input) is null)
            {
                return (add, input, bias);
            }
        }
        return null;
    }
}
