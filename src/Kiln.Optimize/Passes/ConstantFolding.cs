using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Turns Constant nodes into initializers, and evaluates (in ONNX Runtime, one node at a time, in topological order)
/// deterministic default-domain nodes without subgraphs whose inputs are all constant, replacing them by initializers
/// holding their outputs. A node is left alone when its outputs would exceed <c>maxOutputBytes</c>, or would be larger
/// than its inputs together (Expand, Tile, ConstantOfShape…) unless they fit in <see cref="SmallOutputBytes"/>; nodes
/// writing a graph output stay. Initializers that only folded nodes read are removed.
/// </summary>
internal sealed class ConstantFolding(long maxOutputBytes = 16L << 20) : IGraphPass
{
    /// <summary>Outputs this small (shapes, indices, scalars) are folded even when their inputs are smaller.</summary>
    public const long SmallOutputBytes = 1024;

    private static readonly HashSet<string> Nondeterministic = new(StringComparer.Ordinal)
    {
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout",
    };

    public string Name => "constant-folding";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        var constants = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (TensorProto initializer in graph.Initializer)
        {
            if (Initializers.FindConstant(model, initializer.Name) is not null)
            {
                constants[initializer.Name] = initializer;
            }
        }
        int changes = 0;
        var used = new List<string>();
        foreach (NodeProto node in index.TopologicalOrder())
        {
            if (!IsDefaultDomain(node) || node.Output.Any(index.GraphOutputs.Contains))
            {
                continue;
            }
            List<TensorProto>? outputs = node.OpType == "Constant" ? ConstantValue(node) is TensorProto t ? [t] : null : Fold(node, constants, model);
            if (outputs is null)
            {
                continue;
            }
            foreach (TensorProto output in outputs)
            {
                Initializers.Add(model, output);
                Initializers.ForgetValue(graph, output.Name);
                constants[output.Name] = output;
            }
            used.AddRange(node.Input);
            graph.Node.Remove(node);
            changes++;
        }
        Initializers.RemoveUnread(graph, used);
        return changes;
    }

    private List<TensorProto>? Fold(NodeProto node, Dictionary<string, TensorProto> constants, ModelProto model)
    {
        if (Nondeterministic.Contains(node.OpType) || node.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)
            || node.Output.All(o => o.Length == 0))
        {
            return null;
        }
        var inputs = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (string input in node.Input.Where(i => i.Length > 0))
        {
            if (!constants.TryGetValue(input, out TensorProto? tensor))
            {
                return null;
            }
            inputs[input] = tensor;
        }
        // Nodes without inputs other than Constant (e.g. the random ones) depend on nothing the graph fixes.
        if (inputs.Count == 0)
        {
            return null;
        }
        List<TensorProto>? outputs;
        try
        {
            outputs = NodeEvaluator.Evaluate(node, inputs.Values, model);
        }
        catch (Exception e) when (e is OnnxRuntimeException or KilnRuntimeException)
        {
            return null;
        }
        if (outputs is null)
        {
            return null;
        }
        long outputBytes = outputs.Sum(o => (long)o.RawData.Length);
        long inputBytes = inputs.Values.Sum(i => (long)i.CalculateSize());
        return outputBytes > maxOutputBytes || (outputBytes > inputBytes && outputBytes > SmallOutputBytes) ? null : outputs;
    }

    /// <summary>The tensor a Constant node holds, named as its output; null for sparse and string values.</summary>
    private static TensorProto? ConstantValue(NodeProto node)
    {
        if (node.Output.Count != 1 || node.Output[0].Length == 0 || node.Input.Count > 0 || node.Attribute.Count != 1)
        {
            return null;
        }
        AttributeProto attribute = node.Attribute[0];
        TensorProto? tensor = attribute.Name switch
        {
            "value" when attribute.T is not null && attribute.T.DataType != (int)TensorProto.Types.DataType.String => attribute.T.Clone(),
            "value_float" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Float, FloatData = { attribute.F } },
            "value_floats" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Float, Dims = { attribute.Floats.Count }, FloatData = { attribute.Floats } },
            "value_int" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Int64, Int64Data = { attribute.I } },
            "value_ints" => new TensorProto { DataType = (int)TensorProto.Types.DataType.Int64, Dims = { attribute.Ints.Count }, Int64Data = { attribute.Ints } },
            _ => null,
        };
        if (tensor is not null)
        {
            tensor.Name = node.Output[0];
        }
        return tensor;
    }

    private static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";
}
