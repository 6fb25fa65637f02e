using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// Dynamic int8 quantization of MatMuls whose second input is a 2-D float initializer, in exactly the node pattern ONNX
/// Runtime fuses into MatMulIntegerToFloat and then DynamicQuantizeMatMul: the weight stored as symmetric int8 (one
/// scale per tensor, zero point 0), the activation quantized at run time by DynamicQuantizeLinear (uint8, once per
/// distinct activation), MatMulInteger, Cast to float, and a Mul by the product of the two scales, which writes the
/// original MatMul output.
/// </summary>
internal sealed class DynamicInt8Quantizer : IQuantizer
{
    private const int FloatType = (int)TensorProto.Types.DataType.Float;

    /// <inheritdoc/>
    public string Name => "int8";

    /// <summary>One scale per output column of each weight (axis 1) instead of one per tensor.</summary>
    public bool PerChannel { get; init; }

    /// <summary>Nodes (by name) to leave in float.</summary>
    public ISet<string> Exclude { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the MatMuls it quantized.</summary>
    /// <exception cref="OptimizeException">The model's opset is below 10 (no MatMulInteger).</exception>
    public List<string> Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.OpsetVersion < 10)
        {
            throw new OptimizeException($"{model.Source}: opset {model.OpsetVersion}; int8 quantization needs opset 10 or newer (MatMulInteger, DynamicQuantizeLinear)");
        }
        GraphProto graph = model.Proto.Graph;
        var initializers = graph.Initializer.ToDictionary(i => i.Name, StringComparer.Ordinal);
        var activations = new Dictionary<string, (string Quantized, string Scale, string ZeroPoint)>(StringComparer.Ordinal);
        var quantizedWeights = new Dictionary<string, (string Quantized, string Scale, string ZeroPoint)>(StringComparer.Ordinal);
        var names = new NameScope(graph);
        var quantized = new List<string>();
        var rewritten = new List<NodeProto>(graph.Node.Count);
        foreach (NodeProto node in graph.Node)
        {
            if (!IsCandidate(node, initializers, out TensorProto? weight))
            {
                rewritten.Add(node);
                continue;
            }
            string a = node.Input[0];
            string output = node.Output[0];
            if (!activations.TryGetValue(a, out var activation))
            {
                activation = (names.Next(a + "_quantized"), names.Next(a + "_scale"), names.Next(a + "_zero_point"));
                activations[a] = activation;
                rewritten.Add(Node("DynamicQuantizeLinear", names.Next(a + "_DynamicQuantizeLinear"), [a], [activation.Quantized, activation.Scale, activation.ZeroPoint]));
            }
            if (!quantizedWeights.TryGetValue(weight!.Name, out var w))
            {
                w = (names.Next(weight.Name + "_quantized"), names.Next(weight.Name + "_scale"), names.Next(weight.Name + "_zero_point"));
                quantizedWeights[weight.Name] = w;
                graph.Initializer.AddRange(QuantizeWeight(weight, w.Quantized, w.Scale, w.ZeroPoint, PerChannel));
            }
            string product = names.Next(output + "_MatMulInteger");
            string asFloat = names.Next(output + "_cast");
            string scale = names.Next(output + "_scale");
            rewritten.Add(Node("MatMulInteger", names.Next(node.Name + "_quant"), [activation.Quantized, w.Quantized, activation.ZeroPoint, w.ZeroPoint], [product]));
            NodeProto cast = Node("Cast", names.Next(output + "_Cast"), [product], [asFloat]);
            cast.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = FloatType });
            rewritten.Add(cast);
            rewritten.Add(Node("Mul", names.Next(output + "_scales_Mul"), [activation.Scale, w.Scale], [scale]));
            rewritten.Add(Node("Mul", names.Next(output + "_output_Mul"), [asFloat, scale], [output]));
            quantized.Add(node.Name);
        }
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
        var read = new HashSet<string>(graph.Node.SelectMany(n => n.Input), StringComparer.Ordinal);
        foreach (string name in quantizedWeights.Keys.Where(n => !read.Contains(n)))
        {
            graph.Initializer.Remove(initializers[name]);
            if (graph.Input.FirstOrDefault(i => i.Name == name) is { } listed)
            {
                graph.Input.Remove(listed);
            }
        }
        return quantized;
    }

    private bool IsCandidate(NodeProto node, Dictionary<string, TensorProto> initializers, out TensorProto? weight)
    {
        weight = null;
        return node.OpType == "MatMul" && node.Domain is "" or "ai.onnx" && !Exclude.Contains(node.Name)
            && node.Input.Count == 2 && !initializers.ContainsKey(node.Input[0])
            && initializers.TryGetValue(node.Input[1], out weight)
            && weight.DataType == FloatType && weight.Dims.Count == 2 && weight.DataLocation == TensorProto.Types.DataLocation.Default;
    }

    /// <summary>
    /// Symmetric int8: scale = max|W| / 127 over the tensor (or over each column when per channel), values rounded half
    /// to even and clamped to ±127, zero points 0.
    /// </summary>
    private static TensorProto[] QuantizeWeight(TensorProto weight, string quantizedName, string scaleName, string zeroPointName, bool perChannel)
    {
        float[] values = FloatTensor.Read(weight);
        int columns = (int)weight.Dims[1];
        int groups = perChannel ? columns : 1;
        var scales = new float[groups];
        for (int i = 0; i < values.Length; i++)
        {
            int g = perChannel ? i % columns : 0;
            scales[g] = Math.Max(scales[g], MathF.Abs(values[i]));
        }
        for (int g = 0; g < groups; g++)
        {
            scales[g] = scales[g] > 0 ? scales[g] / 127f : 1f;
        }
        var bytes = new byte[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            float scale = scales[perChannel ? i % columns : 0];
            bytes[i] = unchecked((byte)(sbyte)Math.Clamp(MathF.Round(values[i] / scale, MidpointRounding.ToEven), -127f, 127f));
        }
        var quantized = new TensorProto { Name = quantizedName, DataType = (int)TensorProto.Types.DataType.Int8, RawData = ByteString.CopyFrom(bytes) };
        quantized.Dims.AddRange(weight.Dims);
        var scaleTensor = new TensorProto { Name = scaleName, DataType = FloatType };
        scaleTensor.FloatData.Add(scales);
        var zeroPoint = new TensorProto { Name = zeroPointName, DataType = (int)TensorProto.Types.DataType.Int8, RawData = ByteString.CopyFrom(new byte[groups]) };
        if (perChannel)
        {
            scaleTensor.Dims.Add(groups);
            zeroPoint.Dims.Add(groups);
        }
        return [quantized, scaleTensor, zeroPoint];
    }

    private static NodeProto Node(string op, string name, string[] inputs, string[] outputs)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }
}
