using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Fuses BERT-style multi-head self-attention into one com.microsoft.Attention node. The pattern:
/// Q, K and V are MatMul(X, W) (+ b) with constant float32 weights [D, N·H] on the same X [B, S, D]; each is reshaped
/// to [B, S, N, H] and transposed (Q and V to [B, N, S, H], K to [B, N, H, S] in one Transpose or two); Softmax over
/// the last axis of Q·Kᵀ, divided or multiplied by a constant (or not scaled; or Q and K each multiplied by a
/// constant, as exports of scaled_dot_product_attention do), plus an optional additive mask; times V; transposed back
/// and reshaped to [B, S, N·H]. The weights and biases are concatenated ([D, 3·N·H], [3·N·H]); a scale other than
/// 1/√H becomes the <c>scale</c> attribute.
/// <para>
/// The additive mask must be (1 − M[:, None, None, :]) × f, M a [B, S] tensor (the Cast to float and the Unsqueezes
/// as exporters write them), or its Where form with M expanded to [B, 1, S, S]. It becomes Attention's raw mask (M as
/// int32, cast once unless it is) with <c>mask_filter_value</c> f. That is exact when M holds 0 and 1, as attention masks do: ONNX Runtime
/// attends to every position above 0.
/// </para>
/// Batch and sequence sizes come from shape inference: X's first two dimensions must be known to reach both reshapes.
/// </summary>
internal sealed class AttentionFusion : IGraphPass
{
    private const double DefaultMaskFilter = -10000;

    public string Name => "attention-fusion";

    private sealed record Projection(NodeProto MatMul, NodeProto? Add, float[] Weight, float[] Bias);

    private sealed record Match(
        string X, long InputWidth, long Heads, long HeadSize, Projection Q, Projection K, Projection V,
        double Scale, string? Mask, bool MaskIsInt32, double MaskFilter, List<NodeProto> Core, NodeProto Last);

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        // Types of the original graph: the values that stay keep their names, and later layers need them after earlier
        // layers were fused into an op shape inference does not know.
        Dictionary<string, InferredType> types = ShapeInference.Infer(model);
        var maskCasts = new Dictionary<string, string>(StringComparer.Ordinal);
        int changes = 0;
        foreach (NodeProto softmax in graph.Node.Where(n => Is(n, "Softmax")).ToList())
        {
            var index = new GraphIndex(graph);
            if (!graph.Node.Contains(softmax) || TryMatch(model, index, types, softmax) is not { } match || !Replaceable(index, match))
            {
                continue;
            }
            Rewrite(model, match, maskCasts);
            changes += match.Core.Count + 1;
        }
        if (changes > 0)
        {
            changes += new DeadNodeElimination().Apply(model);
        }
        return changes;
    }

    private static Match? TryMatch(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto softmax)
    {
        long axis = IntAttributeOf(softmax, "axis") ?? (Opset(model) >= 13 ? -1 : 1);
        if (axis is not (-1 or 3) || softmax.Input.Count != 1)
        {
            return null;
        }
        var core = new List<NodeProto> { softmax };
        string scores = softmax.Input[0];
        (string? mask, double maskFilter) = (null, DefaultMaskFilter);
        if (Producer(index, scores) is { } add && Is(add, "Add") && Sole(index, scores, "Softmax") is not null && add.Input.Count == 2)
        {
            int product = Product(model, index, add.Input[0]) is not null ? 0 : Product(model, index, add.Input[1]) is not null ? 1 : -1;
            if (product < 0 || AdditiveMask(model, index, types, add.Input[1 - product]) is not ({ } m, { } f))
            {
                return null;
            }
            (mask, maskFilter) = (m, f);
            core.Add(add);
            scores = add.Input[product];
        }
        if (Product(model, index, scores) is not ({ } qk, var scaleNode, double scale) || !ReadOnlyBy(index, scores, core[^1]))
        {
            return null;
        }
        core.Add(qk);
        if (scaleNode is not null)
        {
            core.Add(scaleNode);
        }
        if (Head(model, index, qk.Input[0], qk, HeadRole.Query, core) is not { } q || Head(model, index, qk.Input[1], qk, HeadRole.Key, core) is not { } k
            || Sole(index, softmax.Output[0], "MatMul") is not { } context || context.Input[0] != softmax.Output[0]
            || Head(model, index, context.Input[1], context, HeadRole.Value, core) is not { } v
            || Sole(index, context.Output[0], "Transpose") is not { } back || !Permutation(back, [0, 2, 1, 3])
            // The Shape nodes that computed the merged shape may read the transposed context too; they die with the rest.
            || index.GraphOutputs.Contains(back.Output[0])
            || Readers(index, back.Output[0]).SingleOrDefault(r => Is(r, "Reshape") && r.Input[0] == back.Output[0]) is not { } merge)
        {
            return null;
        }
        core.AddRange([context, back, merge]);
        if (Projected(model, index, q.Value) is not { } qp || Projected(model, index, k.Value) is not { } kp || Projected(model, index, v.Value) is not { } vp)
        {
            return null;
        }
        string x = qp.MatMul.Input[0];
        if (kp.MatMul.Input[0] != x || vp.MatMul.Input[0] != x || types.GetValueOrDefault(x)?.Shape is not [Dim batch, Dim sequence, Dim width] || !width.IsKnown)
        {
            return null;
        }
        // Every reshape splits the last axis into [N, H] and keeps X's batch and sequence; the last merges them back.
        Dim[]? Shape(string value) => types.GetValueOrDefault(value)?.Shape;
        if (Shape(q.Reshaped) is not [_, _, Dim heads, Dim headSize] || !heads.IsKnown || !headSize.IsKnown
            || heads.Value * headSize.Value != qp.Bias.Length || kp.Bias.Length != qp.Bias.Length || vp.Bias.Length != qp.Bias.Length
            || qp.Weight.Length != width.Value * qp.Bias.Length || kp.Weight.Length != qp.Weight.Length || vp.Weight.Length != qp.Weight.Length)
        {
            return null;
        }
        foreach (string reshaped in (string[])[q.Reshaped, k.Reshaped, v.Reshaped])
        {
            if (Shape(reshaped) is not [Dim b, Dim s, Dim n, Dim h] || !b.SameAs(batch) || !s.SameAs(sequence) || !n.SameAs(heads) || !h.SameAs(headSize))
            {
                return null;
            }
        }
        if (Shape(merge.Output[0]) is not [Dim mb, Dim ms, Dim mw] || !mb.SameAs(batch) || !ms.SameAs(sequence) || mw.Value != qp.Bias.Length)
        {
            return null;
        }
        if (mask is not null && (Shape(mask) is not [Dim maskBatch, Dim maskLength] || !maskBatch.SameAs(batch) || !maskLength.SameAs(sequence)))
        {
            return null;
        }
        foreach (Projection p in (Projection[])[qp, kp, vp])
        {
            core.Add(p.MatMul);
            if (p.Add is not null)
            {
                core.Add(p.Add);
            }
        }
        bool maskIsInt32 = mask is not null && types.GetValueOrDefault(mask)?.ElemType == (int)TensorProto.Types.DataType.Int32;
        return new Match(x, width.Value, heads.Value, headSize.Value, qp, kp, vp, scale * q.Factor * k.Factor, mask, maskIsInt32, maskFilter, core, merge);
    }

    /// <summary>Q·Kᵀ, alone or divided or multiplied by a constant scalar: the MatMul, the scaling node and the scale.</summary>
    private static (NodeProto MatMul, NodeProto? Scale, double Value)? Product(ModelProto model, GraphIndex index, string value)
    {
        NodeProto? producer = Producer(index, value);
        if (Is(producer, "MatMul"))
        {
            return (producer!, null, 1);
        }
        if ((Is(producer, "Div") || Is(producer, "Mul")) && producer!.Input.Count == 2)
        {
            bool divide = producer.OpType == "Div";
            foreach (int side in divide ? [0] : (int[])[0, 1])
            {
                if (Producer(index, producer.Input[side]) is { } matMul && Is(matMul, "MatMul") && Sole(index, producer.Input[side], producer.OpType) is not null
                    && Scalar(model, index, producer.Input[1 - side]) is { } c && c != 0)
                {
                    return (matMul, producer, divide ? 1 / c : c);
                }
            }
        }
        return null;
    }

    /// <summary>True when <paramref name="value"/> is read by <paramref name="reader"/> only and is no graph output.</summary>
    private static bool ReadOnlyBy(GraphIndex index, string value, NodeProto reader) =>
        !index.GraphOutputs.Contains(value) && Readers(index, value) is [NodeProto only] && ReferenceEquals(only, reader);

    /// <summary>
    /// One head-split input of a MatMul: Reshape(value, …) to [B, S, N, H], then Transpose(0, 2, 1, 3) — for the keys
    /// Transpose(0, 2, 3, 1), or Transpose(0, 2, 1, 3) followed by Transpose(0, 1, 3, 2) — then, for queries and keys,
    /// optionally a Mul by a constant scalar (exporters of scaled_dot_product_attention scale each by √scale). Each is
    /// read only by the next. Adds them to <paramref name="core"/>; returns the projected value, the reshaped one and the factor.
    /// </summary>
    private static (string Value, string Reshaped, double Factor)? Head(ModelProto model, GraphIndex index, string input, NodeProto reader, HeadRole role, List<NodeProto> core)
    {
        double factor = 1;
        if (role != HeadRole.Value && Producer(index, input) is { } mul && Is(mul, "Mul") && mul.Input.Count == 2)
        {
            int side = Scalar(model, index, mul.Input[1]) is not null ? 0 : Scalar(model, index, mul.Input[0]) is not null ? 1 : -1;
            if (side < 0 || !ReadOnlyBy(index, input, reader))
            {
                return null;
            }
            factor = Scalar(model, index, mul.Input[1 - side])!.Value;
            core.Add(mul);
            (reader, input) = (mul, mul.Input[side]);
        }
        if (Producer(index, input) is not { } transpose || !Is(transpose, "Transpose") || !ReadOnlyBy(index, input, reader))
        {
            return null;
        }
        core.Add(transpose);
        if (role == HeadRole.Key && Permutation(transpose, [0, 1, 3, 2]))
        {
            string split = transpose.Input[0];
            if (Producer(index, split) is not { } inner || !Is(inner, "Transpose") || !Permutation(inner, [0, 2, 1, 3]) || !ReadOnlyBy(index, split, transpose))
            {
                return null;
            }
            core.Add(inner);
            transpose = inner;
        }
        else if (!Permutation(transpose, role == HeadRole.Key ? [0, 2, 3, 1] : [0, 2, 1, 3]))
        {
            return null;
        }
        if (Producer(index, transpose.Input[0]) is not { } reshape || !Is(reshape, "Reshape") || !ReadOnlyBy(index, transpose.Input[0], transpose))
        {
            return null;
        }
        core.Add(reshape);
        return (reshape.Input[0], reshape.Output[0], factor);
    }

    private enum HeadRole
    {
        Query,
        Key,
        Value,
    }

    private static bool Permutation(NodeProto transpose, long[] perm) => IntsAttributeOf(transpose, "perm") is { } p && p.SequenceEqual(perm);

    /// <summary>MatMul(X, W) (+ b) with W a constant float [D, N] and b a constant float [N]: a projection; null otherwise.</summary>
    private static Projection? Projected(ModelProto model, GraphIndex index, string value)
    {
        NodeProto? add = null;
        float[]? bias = null;
        if (Producer(index, value) is { } producer && Is(producer, "Add") && producer.Input.Count == 2)
        {
            foreach (int side in (int[])[0, 1])
            {
                if (Initializers.FindConstant(model, producer.Input[1 - side]) is { Dims.Count: 1 } b && Initializers.ReadFloats(b) is { } values
                    && Producer(index, producer.Input[side]) is { } m && Is(m, "MatMul") && ReadOnlyBy(index, producer.Input[side], producer))
                {
                    (add, bias, value) = (producer, values, producer.Input[side]);
                    break;
                }
            }
            if (add is null)
            {
                return null;
            }
        }
        if (Producer(index, value) is not { } matMul || !Is(matMul, "MatMul") || matMul.Input.Count != 2
            || Initializers.FindConstant(model, matMul.Input[1]) is not { Dims.Count: 2 } weight || Initializers.ReadFloats(weight) is not { } w
            || Initializers.FindConstant(model, matMul.Input[0]) is not null)
        {
            return null;
        }
        bias ??= new float[weight.Dims[1]];
        return bias.Length == weight.Dims[1] ? new Projection(matMul, add, w, bias) : null;
    }

    /// <summary>
    /// The additive mask (1 − Cast(Unsqueeze…(M))) × f, or Where(Cast(1 − …, bool), f, 1 − …) as exports of
    /// scaled_dot_product_attention write it (there M is also expanded to [B, 1, S, S]), with M [B, S] and f a negative
    /// constant: M and f; nulls otherwise.
    /// </summary>
    private static (string? Mask, double? Filter) AdditiveMask(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, string value)
    {
        NodeProto? InvertedMask(string name) =>
            Producer(index, name) is { } sub && Is(sub, "Sub") && sub.Input.Count == 2 && Near(Scalar(model, index, sub.Input[0]), 1, 0) ? sub : null;
        (NodeProto? inverted, double? filter) = (null, null);
        if (Producer(index, value) is { } mul && Is(mul, "Mul") && mul.Input.Count == 2)
        {
            foreach (int side in (int[])[0, 1])
            {
                if (Scalar(model, index, mul.Input[1 - side]) is { } f && f < 0 && InvertedMask(mul.Input[side]) is { } sub)
                {
                    (inverted, filter) = (sub, f);
                    break;
                }
            }
        }
        else if (Producer(index, value) is { } where && Is(where, "Where") && where.Input.Count == 3
            && Scalar(model, index, where.Input[1]) is { } f && f < 0 && InvertedMask(where.Input[2]) is { } sub
            && Producer(index, where.Input[0]) is { } toBool && Is(toBool, "Cast") && toBool.Input[0] == where.Input[2]
            && IntAttributeOf(toBool, "to") == (long)TensorProto.Types.DataType.Bool)
        {
            (inverted, filter) = (sub, f);
        }
        if (inverted is null)
        {
            return (null, null);
        }
        string current = inverted.Input[1];
        // [B, 1, 1, S], or [B, 1, S, S] expanded from it.
        if (types.GetValueOrDefault(current)?.Shape is not [_, { Number: 1 }, Dim rows, Dim keys] || !(rows.Number == 1 || rows.SameAs(keys)))
        {
            return (null, null);
        }
        if (Producer(index, current) is { } cast && Is(cast, "Cast"))
        {
            current = cast.Input[0];
        }
        if (Producer(index, current) is { } expand && Is(expand, "Expand"))
        {
            current = expand.Input[0];
        }
        while (Producer(index, current) is { } unsqueeze && Is(unsqueeze, "Unsqueeze"))
        {
            current = unsqueeze.Input[0];
        }
        return types.GetValueOrDefault(current)?.Shape is { Length: 2 } ? (current, filter) : (null, null);
    }

    /// <summary>
    /// True when nothing outside the matched nodes that still reaches a graph output reads one of their values
    /// (e.g. the Shape nodes that fed the reshapes are dead once the reshapes go).
    /// </summary>
    private static bool Replaceable(GraphIndex index, Match match)
    {
        var core = new HashSet<NodeProto>(match.Core, ReferenceEqualityComparer.Instance);
        string y = match.Last.Output[0];
        var internalValues = new HashSet<string>(match.Core.SelectMany(n => n.Output).Where(o => o != y), StringComparer.Ordinal);
        var needed = new Stack<string>(index.GraphOutputs);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var live = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        while (needed.Count > 0)
        {
            string value = needed.Pop();
            if (!seen.Add(value))
            {
                continue;
            }
            if (internalValues.Contains(value))
            {
                return false;
            }
            if (value == y)
            {
                needed.Push(match.X);
                if (match.Mask is not null)
                {
                    needed.Push(match.Mask);
                }
                continue;
            }
            if (!index.Producers.TryGetValue(value, out NodeProto? producer) || core.Contains(producer) || !live.Add(producer))
            {
                continue;
            }
            foreach (string input in producer.Input.Where(i => i.Length > 0).Concat(DeadNodeElimination.OuterReferences(producer)))
            {
                needed.Push(input);
            }
        }
        return true;
    }

    private static void Rewrite(ModelProto model, Match match, Dictionary<string, string> maskCasts)
    {
        GraphProto graph = model.Graph;
        var scope = new NameScope(graph);
        UseMicrosoftDomain(model);
        long width = match.InputWidth, hidden = match.Heads * match.HeadSize, columns = 3 * hidden;
        var weight = new float[width * columns];
        for (long row = 0; row < width; row++)
        {
            Array.Copy(match.Q.Weight, row * hidden, weight, row * columns, hidden);
            Array.Copy(match.K.Weight, row * hidden, weight, (row * columns) + hidden, hidden);
            Array.Copy(match.V.Weight, row * hidden, weight, (row * columns) + (2 * hidden), hidden);
        }
        string stem = match.Q.MatMul.Name.Length > 0 ? match.Q.MatMul.Name : "attention";
        string weightName = scope.Next(stem + "_qkv_weight"), biasName = scope.Next(stem + "_qkv_bias");
        Initializers.Add(model, Initializers.FloatTensor(weightName, [width, columns], weight));
        Initializers.Add(model, Initializers.FloatTensor(biasName, [columns], [.. match.Q.Bias, .. match.K.Bias, .. match.V.Bias]));

        var attention = new NodeProto { OpType = "Attention", Domain = MicrosoftDomain, Name = scope.Next(stem + "_attention") };
        attention.Input.AddRange([match.X, weightName, biasName]);
        attention.Output.Add(match.Last.Output[0]);
        attention.Attribute.Add(IntAttribute("num_heads", match.Heads));
        if (!Near(match.Scale, 1 / Math.Sqrt(match.HeadSize), 1e-6))
        {
            attention.Attribute.Add(FloatAttribute("scale", (float)match.Scale));
        }
        if (match.Mask is { } mask)
        {
            if (match.MaskIsInt32)
            {
                maskCasts[mask] = mask;
            }
            if (!maskCasts.TryGetValue(mask, out string? maskIndex))
            {
                maskIndex = scope.Next(mask + "_int32");
                NodeProto cast = new() { OpType = "Cast", Name = scope.Next(mask + "_to_int32") };
                cast.Input.Add(mask);
                cast.Output.Add(maskIndex);
                cast.Attribute.Add(IntAttribute("to", (long)TensorProto.Types.DataType.Int32));
                NodeProto? producer = graph.Node.FirstOrDefault(n => n.Output.Contains(mask));
                graph.Node.Insert(producer is null ? 0 : graph.Node.IndexOf(producer) + 1, cast);
                maskCasts[mask] = maskIndex;
            }
            attention.Input.Add(maskIndex);
            if (!Near(match.MaskFilter, DefaultMaskFilter, 1e-6))
            {
                attention.Attribute.Add(FloatAttribute("mask_filter_value", (float)match.MaskFilter));
            }
        }
        graph.Node.Insert(graph.Node.IndexOf(match.Last), attention);
        foreach (NodeProto node in match.Core)
        {
            graph.Node.Remove(node);
        }
    }
}
