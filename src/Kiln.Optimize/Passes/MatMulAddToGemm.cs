using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>
/// MatMul(A, B) then Add(·, C) → Gemm(A, B, C), where A is known to be 2-D (declared or inferred), B is a 2-D initializer, C an initializer
/// broadcastable to [M, N], and the MatMul's output feeds only the Add. Gemm is 2-D only, so higher ranks stay.
/// </summary>
internal sealed class MatMulAddToGemm : IGraphPass
{
    private static readonly HashSet<int> FloatTypes =
    [
        (int)TensorProto.Types.DataType.Float, (int)TensorProto.Types.DataType.Double,
        (int)TensorProto.Types.DataType.Float16, (int)TensorProto.Types.DataType.Bfloat16,
    ];

    public string Name => "matmul-add-to-gemm";

    public int Apply(ModelProto model)
    {
        if (model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version is not >= 7)
        {
            return 0;
        }
        GraphProto graph = model.Graph;
        // Fusing keeps every value's shape, so one inference serves the whole pass.
        Dictionary<string, InferredType> types = ShapeInference.Infer(model);
        int changes = 0;
        foreach (NodeProto matMul in graph.Node.Where(n => n.OpType == "MatMul" && IsDefaultDomain(n)).ToList())
        {
            var index = new GraphIndex(graph);
            if (Match(model, index, types, matMul) is not (NodeProto add, string bias))
            {
                continue;
            }
            matMul.OpType = "Gemm";
            matMul.Input.Add(bias);
            string fused = matMul.Output[0];
            matMul.Output[0] = add.Output[0];
            graph.Node.Remove(add);
            Initializers.ForgetValue(graph, fused);
            changes += 2;
        }
        return changes;
    }

    private static (NodeProto Add, string Bias)? Match(ModelProto model, GraphIndex index, Dictionary<string, InferredType> types, NodeProto matMul)
    {
        if (matMul.Input.Count != 2 || matMul.Output.Count != 1 || matMul.Attribute.Count > 0)
        {
            return null;
        }
        string product = matMul.Output[0];
        if (index.GraphOutputs.Contains(product) || index.Consumers.GetValueOrDefault(product, []) is not [NodeProto add]
            || add.OpType != "Add" || !IsDefaultDomain(add) || add.Input.Count != 2 || add.Input[0] == add.Input[1])
        {
            return null;
        }
        if (types.GetValueOrDefault(matMul.Input[0])?.Shape is not [Dim rows, _]
            || Initializers.FindConstant(model, matMul.Input[1]) is not TensorProto weight || weight.Dims.Count != 2
            || !FloatTypes.Contains(weight.DataType))
        {
            return null;
        }
        string bias = add.Input[0] == product ? add.Input[1] : add.Input[0];
        if (Initializers.FindConstant(model, bias) is not TensorProto c || c.DataType != weight.DataType
            || !BroadcastsTo([.. c.Dims], rows.Value, weight.Dims[1]))
        {
            return null;
        }
        return (add, bias);
    }

    /// <summary>Gemm's C must be unidirectionally broadcastable to [M, N]; M may be unknown (then C's rows must be 1).</summary>
    private static bool BroadcastsTo(long[] dims, long m, long n) => dims switch
    {
        [] => true,
        [long cn] => cn == 1 || cn == n,
        [long cm, long cn] => (cm == 1 || (m > 0 && cm == m)) && (cn == 1 || cn == n),
        _ => false,
    };

    private static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";
}
