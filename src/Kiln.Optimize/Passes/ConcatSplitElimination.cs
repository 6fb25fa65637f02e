using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Memory copies that change nothing: a Split whose pieces a Concat puts back together in order on the same axis (the
/// Concat reads the Split's input instead; the Split goes when nothing else reads it); a Concat read only by a Split
/// at the same boundaries (each piece's readers read the Concat's input); a Concat of one input; a Slice that keeps
/// the whole of every axis it names (known sizes from shape inference, or ends at INT_MAX). Values that are graph
/// outputs are left as they are.
/// </summary>
internal sealed class ConcatSplitElimination : IGraphPass
{
    public string Name => "concat-split-elimination";

    public int Apply(ModelProto model)
    {
        // One rewrite per round (renames change who reads what, and can expose another copy), until none is left.
        int total = 0;
        for (int round = 0; round < 10_000; round++)
        {
            int changes = Round(model);
            if (changes == 0)
            {
                break;
            }
            total += changes;
        }
        return total;
    }

    private static int Round(ModelProto model)
    {
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        Dictionary<string, InferredType> types = ShapeInference.Infer(model);
        var removed = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        int changes = 0;
        foreach (NodeProto node in graph.Node.ToList())
        {
            if (removed.Contains(node) || !IsDefaultDomain(node))
            {
                continue;
            }
            List<NodeProto> gone = node.OpType switch
            {
                "Concat" => Concat(model, index, types, node),
                "Slice" => WholeSlice(model, index, types, node) ? Bypass(graph, index, node, node.Input[0]) : [],
                _ => [],
            };
            if (gone.Any(removed.Contains))
            {
                continue;
            }
            foreach (NodeProto old in gone)
            {
                graph.Node.Remove(old);
                removed.Add(old);
                foreach (string output in old.Output)
                {
                    Initializers.ForgetValue(graph, output);
                }
            }
            changes += gone.Count;
            if (gone.Count > 0)
            {
                break;
            }
        }
        return changes;
    }

    /// <summary>Readers of the node's single output read <paramref name="replacement"/>; returns the node to remove (none when its output is a graph output).</summary>
    private static List<NodeProto> Bypass(GraphProto graph, GraphIndex index, NodeProto node, string replacement)
    {
        if (node.Output.Count != 1 || index.GraphOutputs.Contains(node.Output[0]))
        {
            return [];
        }
        Rename(graph, node.Output[0], replacement);
        return [node];
    }

    private static List<NodeProto> Concat(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto concat)
    {
        GraphProto graph = model.Graph;
        if (concat.Input.Count == 1)
        {
            return Bypass(graph, index, concat, concat.Input[0]);
        }
        if (concat.Input.Count == 0 || concat.Input.Any(i => i.Length == 0) || types.GetValueOrDefault(concat.Output[0])?.Shape is not { } shape)
        {
            return [];
        }
        int rank = shape.Length;
        long axis = Normalize(IntAttributeOf(concat, "axis") ?? 0, rank);

        // Split → Concat of all its pieces, in order, on the same axis.
        if (Producer(index, concat.Input[0]) is { } split && Is(split, "Split") && split.Output.SequenceEqual(concat.Input)
            && Normalize(IntAttributeOf(split, "axis") ?? 0, rank) == axis)
        {
            List<NodeProto> gone = Bypass(graph, index, concat, split.Input[0]);
            bool splitUnread = split.Output.All(o => !index.GraphOutputs.Contains(o) && Readers(index, o).All(r => r == concat));
            return gone.Count > 0 && splitUnread ? [concat, split] : gone;
        }

        // Concat → its only reader a Split at the inputs' boundaries.
        if (Sole(index, concat.Output[0], "Split") is { } reader && Normalize(IntAttributeOf(reader, "axis") ?? 0, rank) == axis
            && reader.Output.Count == concat.Input.Count && !reader.Output.Any(index.GraphOutputs.Contains)
            && SplitSizes(model, index, reader, shape[axis]) is { } sizes)
        {
            for (int i = 0; i < concat.Input.Count; i++)
            {
                if (types.GetValueOrDefault(concat.Input[i])?.Shape is not { } piece || piece.Length != rank || !piece[axis].IsKnown || piece[axis].Value != sizes[i])
                {
                    return [];
                }
            }
            for (int i = 0; i < reader.Output.Count; i++)
            {
                if (reader.Output[i].Length > 0)
                {
                    Rename(graph, reader.Output[i], concat.Input[i]);
                }
            }
            return [concat, reader];
        }
        return [];
    }

    /// <summary>The sizes a Split cuts: its sizes input (opset 13+) or attribute, or equal parts of a known total.</summary>
    private static long[]? SplitSizes(ModelProto model, GraphIndex index, NodeProto split, Dim total)
    {
        if (split.Input.Count > 1 && split.Input[1].Length > 0)
        {
            return Constant(model, index, split.Input[1]) is { } t ? Int64Values(t) : null;
        }
        if (IntsAttributeOf(split, "split") is { } attribute)
        {
            return attribute;
        }
        int count = split.Output.Count;
        if (!total.IsKnown || IntAttributeOf(split, "num_outputs") is { } parts && parts != count)
        {
            return null;
        }
        long piece = (total.Value + count - 1) / count;
        return [.. Enumerable.Range(0, count).Select(i => Math.Max(0, Math.Min(piece, total.Value - (i * piece))))];
    }

    private static bool WholeSlice(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto slice)
    {
        if (types.GetValueOrDefault(slice.Input[0])?.Shape is not { } shape || slice.Output.Count != 1)
        {
            return false;
        }
        long[]? starts, ends, axes = null, steps = null;
        if (Opset(model) >= 10)
        {
            if (slice.Input.Count < 3 || Constant(model, index, slice.Input[1]) is not { } s || Constant(model, index, slice.Input[2]) is not { } e)
            {
                return false;
            }
            (starts, ends) = (Int64Values(s), Int64Values(e));
            if (slice.Input.Count > 3 && slice.Input[3].Length > 0 && (axes = Constant(model, index, slice.Input[3]) is { } a ? Int64Values(a) : null) is null)
            {
                return false;
            }
            if (slice.Input.Count > 4 && slice.Input[4].Length > 0 && (steps = Constant(model, index, slice.Input[4]) is { } st ? Int64Values(st) : null) is null)
            {
                return false;
            }
        }
        else
        {
            (starts, ends, axes) = (IntsAttributeOf(slice, "starts"), IntsAttributeOf(slice, "ends"), IntsAttributeOf(slice, "axes"));
        }
        if (starts is null || ends is null || starts.Length != ends.Length)
        {
            return false;
        }
        axes ??= [.. Enumerable.Range(0, starts.Length).Select(i => (long)i)];
        for (int i = 0; i < starts.Length; i++)
        {
            long axis = Normalize(axes[i], shape.Length);
            if (axis < 0 || axis >= shape.Length || (steps is not null && steps[i] != 1))
            {
                return false;
            }
            Dim size = shape[axis];
            bool fromStart = starts[i] == 0 || (size.IsKnown && starts[i] <= -size.Value);
            bool toEnd = ends[i] >= int.MaxValue || (size.IsKnown && ends[i] >= size.Value);
            if (!fromStart || !toEnd)
            {
                return false;
            }
        }
        return true;
    }

    private static long[]? Int64Values(TensorProto tensor)
    {
        long count = Initializers.ElementCount(tensor);
        if (tensor.DataType == (int)TensorProto.Types.DataType.Int64)
        {
            return tensor.Int64Data.Count == count ? [.. tensor.Int64Data]
                : tensor.RawData.Length == count * 8 ? [.. Enumerable.Range(0, (int)count).Select(i => BitConverter.ToInt64(tensor.RawData.Span[(i * 8)..]))] : null;
        }
        if (tensor.DataType == (int)TensorProto.Types.DataType.Int32)
        {
            return tensor.Int32Data.Count == count ? [.. tensor.Int32Data.Select(v => (long)v)]
                : tensor.RawData.Length == count * 4 ? [.. Enumerable.Range(0, (int)count).Select(i => (long)BitConverter.ToInt32(tensor.RawData.Span[(i * 4)..]))] : null;
        }
        return null;
    }

    private static long Normalize(long axis, int rank) => axis < 0 ? axis + rank : axis;
}
