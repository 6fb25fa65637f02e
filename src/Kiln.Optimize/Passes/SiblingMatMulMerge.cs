using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using static Kiln.Optimize.Passes.Patterns;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Horizontal fusion: MatMuls that read the same activation A (rank 2 or more, inferred) with constant float32 2-D
/// weights of the same K (e.g. attention's Q, K and V projections) become one MatMul on the weights concatenated along
/// N, followed by a Split along the last axis that writes the original outputs. When every one of them is followed by
/// an Add of a constant 1-D bias of its N, read by nothing else, the biases are concatenated into one Add before the
/// Split. Sibling Gemms (α = β = 1, A not transposed, the same transB, all with or all without a 1-D constant C) merge
/// the same way into one Gemm and a Split along axis 1. Opset 11 or later (Split's sizes as an attribute before 13, an
/// input from 13).
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
        var gemms = new Dictionary<(string A, long K, bool TransB, bool Biased), List<GemmMember>>();
        foreach (NodeProto node in graph.Node)
        {
            if (Is(node, "Gemm"))
            {
                if (AsGemmMember(model, node) is ({ } gemmKey, { } gemm))
                {
                    if (!gemms.TryGetValue(gemmKey, out List<GemmMember>? list))
                    {
                        gemms[gemmKey] = list = [];
                    }
                    list.Add(gemm);
                }
                continue;
            }
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
        foreach (((string a, long k, bool transB, _), List<GemmMember> members) in gemms.Where(g => g.Value.Count > 1))
        {
            changes += MergeGemms(model, a, k, transB, members);
        }
        return changes;
    }

    private sealed record GemmMember(NodeProto Gemm, TensorProto Weight, float[] Values, long N, string? BiasName, float[]? Bias);

    /// <summary>Gemm(A, W[, C]) with W a constant float32 2-D weight, C absent or a constant 1-D vector of N, α = β = 1, A not transposed.</summary>
    private static ((string, long, bool, bool)? Key, GemmMember? Member) AsGemmMember(ModelProto model, NodeProto node)
    {
        bool Unit(string name) => node.Attribute.FirstOrDefault(a => a.Name == name) is not { } a || a.F == 1f;
        if (node.Input.Count is < 2 or > 3 || node.Output.Count != 1 || IntAttributeOf(node, "transA") is { } ta && ta != 0 || !Unit("alpha") || !Unit("beta")
            || Initializers.FindConstant(model, node.Input[1]) is not { Dims.Count: 2 } weight || Initializers.ReadFloats(weight) is not { } values)
        {
            return (null, null);
        }
        bool transB = IntAttributeOf(node, "transB") is { } tb && tb != 0;
        long k = transB ? weight.Dims[1] : weight.Dims[0], n = transB ? weight.Dims[0] : weight.Dims[1];
        (string? biasName, float[]? bias) = (null, null);
        if (node.Input.Count == 3 && node.Input[2].Length > 0)
        {
            if (Initializers.FindConstant(model, node.Input[2]) is not { Dims.Count: 1 } c || c.Dims[0] != n || Initializers.ReadFloats(c) is not { } cValues)
            {
                return (null, null);
            }
            (biasName, bias) = (node.Input[2], cValues);
        }
        return ((node.Input[0], k, transB, bias is not null), new GemmMember(node, weight, values, n, biasName, bias));
    }

    /// <summary>Sibling Gemms → one Gemm on the weights stacked along N (rows when transB, columns otherwise) and a Split along axis 1.</summary>
    private static int MergeGemms(ModelProto model, string a, long k, bool transB, List<GemmMember> members)
    {
        GraphProto graph = model.Graph;
        var scope = new NameScope(graph);
        long[] sizes = [.. members.Select(m => m.N)];
        long n = sizes.Sum();
        float[] weight;
        if (transB)
        {
            weight = [.. members.SelectMany(m => m.Values)];
        }
        else
        {
            weight = new float[k * n];
            long column = 0;
            foreach (GemmMember member in members)
            {
                for (long row = 0; row < k; row++)
                {
                    Array.Copy(member.Values, row * member.N, weight, (row * n) + column, member.N);
                }
                column += member.N;
            }
        }
        string first = members[0].Gemm.Name.Length > 0 ? members[0].Gemm.Name : "gemm";
        string weightName = scope.Next($"{members[0].Weight.Name}_merged");
        Initializers.Add(model, Initializers.FloatTensor(weightName, transB ? [n, k] : [k, n], weight));
        var gemm = new NodeProto { OpType = "Gemm", Name = scope.Next($"{first}_merged") };
        gemm.Input.AddRange([a, weightName]);
        if (members[0].Bias is not null)
        {
            string biasName = scope.Next($"{members[0].BiasName}_merged");
            Initializers.Add(model, Initializers.FloatTensor(biasName, [n], [.. members.SelectMany(m => m.Bias!)]));
            gemm.Input.Add(biasName);
        }
        if (transB)
        {
            gemm.Attribute.Add(IntAttribute("transB", 1));
        }
        string product = scope.Next($"{first}_merged_output");
        gemm.Output.Add(product);
        NodeProto split = SplitNode(model, scope, first, product, 1, sizes, members.Select(m => m.Gemm.Output[0]));
        int position = members.Min(m => graph.Node.IndexOf(m.Gemm));
        foreach (GemmMember member in members)
        {
            graph.Node.Remove(member.Gemm);
        }
        graph.Node.Insert(position, gemm);
        graph.Node.Insert(position + 1, split);
        Initializers.RemoveUnread(graph, members.Select(m => m.Weight.Name).Concat(members.Where(m => m.BiasName is not null).Select(m => m.BiasName!)));
        return members.Count + 2;
    }

    private static NodeProto SplitNode(ModelProto model, NameScope scope, string stem, string input, long axis, long[] sizes, IEnumerable<string> outputs)
    {
        var split = new NodeProto { OpType = "Split", Name = scope.Next($"{stem}_split") };
        split.Input.Add(input);
        split.Attribute.Add(IntAttribute("axis", axis));
        if (Opset(model) >= 13)
        {
            string sizesName = scope.Next($"{stem}_split_sizes");
            Initializers.Add(model, Int64Tensor(sizesName, sizes));
            split.Input.Add(sizesName);
        }
        else
        {
            split.Attribute.Add(new AttributeProto { Name = "split", Type = AttributeProto.Types.AttributeType.Ints, Ints = { sizes } });
        }
        split.Output.AddRange(outputs);
        return split;
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
        NodeProto splitNode = SplitNode(model, scope, first, split, rank - 1, sizes, members.Select(m => biased ? m.Add!.Output[0] : m.MatMul.Output[0]));
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
