using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// The element type of each value of a graph, as far as it can be told without full ONNX type inference: declared
/// types (inputs, outputs, value_info, initializers) first, then per-op rules in node order, the usual one being
/// "the type of the first input whose type is known". Values nothing tells stay unknown.
/// </summary>
internal static class ElementTypes
{
    private const int Float = (int)TensorProto.Types.DataType.Float;
    private const int Int64 = (int)TensorProto.Types.DataType.Int64;
    private const int Int32 = (int)TensorProto.Types.DataType.Int32;
    private const int Uint8 = (int)TensorProto.Types.DataType.Uint8;
    private const int Bool = (int)TensorProto.Types.DataType.Bool;

    private static readonly HashSet<string> Comparisons = new(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"], StringComparer.Ordinal);

    public static Dictionary<string, int> Infer(GraphProto graph)
    {
        var types = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (TensorProto initializer in graph.Initializer)
        {
            types[initializer.Name] = initializer.DataType;
        }
        foreach (ValueInfoProto value in graph.Input.Concat(graph.ValueInfo).Concat(graph.Output))
        {
            if (value.Type?.TensorType is { ElemType: > 0 } tensor)
            {
                types[value.Name] = tensor.ElemType;
            }
        }
        foreach (NodeProto node in graph.Node)
        {
            int?[] outputs = Outputs(node, types);
            for (int i = 0; i < node.Output.Count; i++)
            {
                if (node.Output[i].Length > 0 && !types.ContainsKey(node.Output[i]) && outputs[Math.Min(i, outputs.Length - 1)] is { } type)
                {
                    types[node.Output[i]] = type;
                }
            }
        }
        return types;
    }

    private static int?[] Outputs(NodeProto node, Dictionary<string, int> types)
    {
        int? Input(int i) => i < node.Input.Count && types.TryGetValue(node.Input[i], out int t) ? t : null;
        int? Attr(string name) => node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? (int)a.I : null;
        int? first = node.Input.Where(i => i.Length > 0).Select(i => types.TryGetValue(i, out int t) ? t : (int?)null).FirstOrDefault(t => t is not null);
        if (node.Domain is not ("" or "ai.onnx"))
        {
            return [first];
        }
        return node.OpType switch
        {
            "Constant" => [node.Attribute.FirstOrDefault() switch
            {
                { Name: "value", T: { } t } => t.DataType,
                { Name: "value_float" or "value_floats" } => Float,
                { Name: "value_int" or "value_ints" } => Int64,
                _ => null,
            }],
            "Cast" => [Attr("to")],
            "CastLike" => [Input(1)],
            "Shape" or "Size" or "NonZero" or "ArgMax" or "ArgMin" => [Int64],
            "ConstantOfShape" => [node.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.DataType ?? Float],
            "RandomNormal" or "RandomUniform" => [Attr("dtype") ?? Float],
            "RandomNormalLike" or "RandomUniformLike" or "EyeLike" or "Bernoulli" => [Attr("dtype") ?? first],
            "Multinomial" => [Attr("dtype") ?? Int32],
            "Where" => [Input(1)],
            "OneHot" => [Input(2)],
            "DequantizeLinear" => [Input(1)],
            "QuantizeLinear" => [Input(2) ?? Uint8],
            "DynamicQuantizeLinear" => [Uint8, Float, Uint8],
            "MatMulInteger" or "ConvInteger" => [Int32],
            "TopK" => [first, Int64],
            "Unique" => [first, Int64],
            "Dropout" => [first, Bool],
            _ when Comparisons.Contains(node.OpType) => [Bool],
            _ => [first],
        };
    }
}
