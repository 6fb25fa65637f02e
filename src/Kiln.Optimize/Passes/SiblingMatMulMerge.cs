using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Horizontal fusion: MatMuls that read the same activation A (rank 2 or more, inferred) with constant float32 2-D
/// weights of the same K (e.g. attention's Q, K and V projections) become one MatMul on the weights concatenated along
/// N, followed by a Split along the last axis that writes the original outputs. When every one of them is followed by
/// an Add of a constant 1-D bias of its N, read by nothing else, the biases are concatenated into one Add before the
/// Split. Opset 11 or later (Split's sizes as an attribute before 13, an input from 13).
/// </summary>
internal sealed class SiblingMatMulMerge : IGraphPass
{
    public string Name => "sibling-matmul-merge";

    private sealed record Member(NodeProto MatMul, TensorProto Weight, float[] Values, NodeProto? Add, string? BiasName, float[]? Bias);

    public int Apply(ModelProto model)
    {
        if (Opset(model) < 11)
        {
            return 0;
        }
        GraphProto graph = model.Graph;
        var index = new GraphIndex(graph);
        Dictionary<string, InferredType> types = ShapeInference.Infer(model);
        var groups = new Dictionary<(string A, long K), List<Member>>();
        foreach (NodeProto node in graph.Node)
        {
            if (!Is(node, "MatMul") || node.Input.Count != 2 || node.Output.Count != 1
                || types.GetValueOrDefault(node.Input[0])?.Shape is not { Length: >= 2 }
                || Initializers.FindConstant(model, node.Input[1]) is not { Dims.Count: 2 } weight
                || Initializers.ReadFloats(weight) is not { } values)
            {
                continue;
            }
            (NodeProto? add, string? biasName, float[]? bias) = (null, null, null);
            if (Sole(index, node.Output[0], "Add") is { } a && Other(a, node.Output[0]) is { } b
                && Initializers.FindConstant(model, b) is { Dims.Count: 1 } vector && vector.Dims[0] == weight.Dims[1]
                && Initializers.ReadFloats(vector) is { } biasValues)
            {
                (add, biasName, bias) = (a, b, biasValues);
            }
            var key = (node.Input[0], weight.Dims[0]);
            if (!groups.TryGetValue(key, out List<Member>? members))
            {
                groups[key] = members = [];
            }
            members.Add(new Member(node, weight, values, add, biasName, bias));
        }
        int changes = 0;
        foreach (((string a, long k), List<Member> members) in groups.Where(g => g.Value.Count > 1))
        {
            changes += Merge(model, types[a].Shape!.Length, a, k, members);
        }
        return changes;
    }

    private static int Merge(ModelProto model, int rank, string a, long k, List<Member> members)
    {
        GraphProto graph = model.Graph;
        var scope = new NameScope(graph);
        bool biased = members.All(m => m.Add is not null);
        long[] sizes = [.. members.Select(m => m.Weight.Dims[1])];
        long n = sizes.Sum();
        var weight = new float[k * n];
        long column = 0;
        foreach (Member member in members)
        {
            long width = member.Weight.Dims[1];
            for (long row = 0; row < k; row++)
            {
                Array.Copy(member.Values, row * width, weight, (row * n) + column, width);
            }
            column += width;
        }
        string first = members[0].MatMul.Name.Length > 0 ? members[0].MatMul.Name : "matmul";
        string weightName = scope.Next($"{members[0].Weight.Name}_merged");
        Initializers.Add(model, Initializers.FloatTensor(weightName, [k, n], weight));
        var nodes = new List<NodeProto>();
        string product = scope.Next($"{first}_merged_output");
        var matMul = new NodeProto { OpType = "MatMul", Name = scope.Next($"{first}_merged") };
        matMul.Input.AddRange([a, weightName]);
        matMul.Output.Add(product);
        nodes.Add(matMul);
        string split = product;
        if (biased)
        {
            string biasName = scope.Next($"{members[0].BiasName}_merged");
            Initializers.Add(model, Initializers.FloatTensor(biasName, [n], [.. members.SelectMany(m => m.Bias!)]));
            split = scope.Next($"{first}_merged_biased");
            var add = new NodeProto { OpType = "Add", Name = scope.Next($"{first}_merged_bias") };
            add.Input.AddRange([product, biasName]);
            add.Output.Add(split);
            nodes.Add(add);
        }
        var splitNode = new NodeProto { OpType = "Split", Name = scope.Next($"{first}_split") };
        splitNode.Input.Add(split);
        splitNode.Attribute.Add(IntAttribute("axis", rank - 1));
        if (Opset(model) >= 13)
        {
            string sizesName = scope.Next($"{first}_split_sizes");
            Initializers.Add(model, Int64Tensor(sizesName, sizes));
            splitNode.Input.Add(sizesName);
        }
        else
        {
            splitNode.Attribute.Add(new AttributeProto { Name = "split", Type = AttributeProto.Types.AttributeType.Ints, Ints = { sizes } });
        }
        splitNode.Output.AddRange(members.Select(m => biased ? m.Add!.Output[0] : m.MatMul.Output[0]));
        nodes.Add(splitNode);

        int position = members.Min(m => graph.Node.IndexOf(m.MatMul));
        foreach (Member member in members)
        {
            graph.Node.Remove(member.MatMul);
            if (biased)
            {
                graph.Node.Remove(member.Add!);
                Initializers.ForgetValue(graph, member.MatMul.Output[0]);
            }
        }
        for (int i = 0; i < nodes.Count; i++)
        {
            graph.Node.Insert(position + i, nodes[i]);
        }
        Initializers.RemoveUnread(graph, members.Select(m => m.Weight.Name).Concat(members.Where(m => m.BiasName is not null).Select(m => m.BiasName!)));
        return (members.Count * (biased ? 2 : 1)) + nodes.Count;
    }
}
