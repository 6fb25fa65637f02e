using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>Node and attribute helpers shared by the quantizers.</summary>
internal static class QuantizedGraph
{
    public const string MicrosoftDomain = "com.microsoft";

    public static NodeProto Node(string op, string name, string[] inputs, string[] outputs, string domain = "")
    {
        var node = new NodeProto { OpType = op, Name = name, Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }

    public static NodeProto With(this NodeProto node, string attribute, long value)
    {
        node.Attribute.Add(new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Int, I = value });
        return node;
    }

    public static NodeProto With(this NodeProto node, string attribute, long[] values)
    {
        var a = new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        node.Attribute.Add(a);
        return node;
    }

    public static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";

    public static AttributeProto? Attribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

    public static long IntAttribute(NodeProto node, string name, long fallback) => Attribute(node, name) is { } a ? a.I : fallback;

    public static float FloatAttribute(NodeProto node, string name, float fallback) => Attribute(node, name) is { } a ? a.F : fallback;

    /// <summary>Declares the com.microsoft operator set (version 1) unless the model already imports it.</summary>
    public static void ImportMicrosoftDomain(ModelProto model)
    {
        if (!model.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        }
    }
}
