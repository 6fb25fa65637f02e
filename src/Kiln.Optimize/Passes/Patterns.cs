using System.Buffers.Binary;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>Small matching helpers shared by the fusion passes.</summary>
internal static class Patterns
{
    public const string MicrosoftDomain = "com.microsoft";

    public static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";

    public static bool Is(NodeProto? node, string op) => node is not null && node.OpType == op && IsDefaultDomain(node);

    /// <summary>The single default-domain reader of <paramref name="value"/> when it is of type <paramref name="op"/> and the value is no graph output.</summary>
    public static NodeProto? Sole(GraphIndex index, string value, string op) =>
        !index.GraphOutputs.Contains(value) && index.Consumers.GetValueOrDefault(value, []) is [NodeProto only] && Is(only, op) ? only : null;

    /// <summary>The readers of <paramref name="value"/> (empty when none).</summary>
    public static List<NodeProto> Readers(GraphIndex index, string value) => index.Consumers.GetValueOrDefault(value, []);

    public static NodeProto? Producer(GraphIndex index, string value) => index.Producers.GetValueOrDefault(value);

    /// <summary>The input of a two-input node other than <paramref name="value"/>; null when the node reads it twice or not at all.</summary>
    public static string? Other(NodeProto node, string value) =>
        node.Input.Count != 2 || node.Input[0] == node.Input[1] ? null
        : node.Input[0] == value ? node.Input[1] : node.Input[1] == value ? node.Input[0] : null;

    /// <summary>A constant tensor: an initializer no runtime input overrides, or the value of a Constant node.</summary>
    public static TensorProto? Constant(ModelProto model, GraphIndex index, string name)
    {
        if (Initializers.FindConstant(model, name) is { } initializer)
        {
            return initializer;
        }
        return Producer(index, name) is { OpType: "Constant" } constant && IsDefaultDomain(constant)
            && constant.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } tensor ? tensor : null;
    }

    /// <summary>The one value of a constant float or double tensor of one element (any rank); null otherwise.</summary>
    public static double? Scalar(ModelProto model, GraphIndex index, string name)
    {
        if (Constant(model, index, name) is not { } tensor || Initializers.ElementCount(tensor) != 1 || ExternalData.IsExternal(tensor))
        {
            return null;
        }
        ReadOnlySpan<byte> raw = tensor.RawData.Span;
        return tensor.DataType switch
        {
            (int)TensorProto.Types.DataType.Float when raw.Length == 4 => BinaryPrimitives.ReadSingleLittleEndian(raw),
            (int)TensorProto.Types.DataType.Float when tensor.FloatData.Count == 1 => tensor.FloatData[0],
            (int)TensorProto.Types.DataType.Double when raw.Length == 8 => BinaryPrimitives.ReadDoubleLittleEndian(raw),
            (int)TensorProto.Types.DataType.Double when tensor.DoubleData.Count == 1 => tensor.DoubleData[0],
            _ => null,
        };
    }

    public static bool Near(double? value, double expected, double tolerance = 1e-4) =>
        value is { } v && Math.Abs(v - expected) <= tolerance * Math.Max(1, Math.Abs(expected));

    /// <summary>Declares the com.microsoft operator set (version 1) when the model does not yet.</summary>
    public static void UseMicrosoftDomain(ModelProto model)
    {
        if (!model.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        }
    }

    /// <summary>Makes every reader of <paramref name="from"/> (subgraphs included) read <paramref name="to"/> instead.</summary>
    public static void Rename(GraphProto graph, string from, string to)
    {
        foreach (NodeProto node in graph.Node)
        {
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == from)
                {
                    node.Input[i] = to;
                }
            }
            foreach (AttributeProto attribute in node.Attribute)
            {
                foreach (GraphProto body in attribute.G is null ? attribute.Graphs : attribute.Graphs.Append(attribute.G))
                {
                    Rename(body, from, to);
                }
            }
        }
    }

    public static AttributeProto FloatAttribute(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto IntAttribute(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static long? IntAttributeOf(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;

    public static long[]? IntsAttributeOf(NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? [.. a.Ints] : null;

    public static long Opset(ModelProto model) => model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1;

    public static TensorProto Int64Tensor(string name, long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.Add(values.Length);
        tensor.Int64Data.AddRange(values);
        return tensor;
    }
}
