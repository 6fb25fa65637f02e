using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// fp16: float32 initializers, constants and intermediate values become float16; the graph's float32 inputs and
/// outputs stay float32 (a Cast after each input and before each output). Nodes of the block list (ops without a
/// float16 form, or that must stay float32: ORT's converter's list, quantization ops, and every op outside the default
/// domain), of <see cref="KeepFloat32OpTypes"/> and of <see cref="Exclude"/> stay float32 with Casts around them.
/// Models with If/Loop/Scan bodies are refused.
/// </summary>
/// <remarks>fp16 is for GPUs: on ORT's CPU EP most ops have no float16 kernel, ORT casts around them, and the model runs slower than float32.</remarks>
internal sealed class Float16Converter : IQuantizer
{
    private const int Float = (int)TensorProto.Types.DataType.Float;
    private const int Half = (int)TensorProto.Types.DataType.Float16;

    /// <summary>Ops that always stay float32 (onnxconverter-common's default block list, plus quantization ops).</summary>
    public static readonly IReadOnlySet<string> BlockList = new HashSet<string>(
    [
        "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer", "FeatureVectorizer", "Imputer", "LabelEncoder",
        "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder", "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler",
        "TreeEnsembleClassifier", "TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Range", "CumSum",
        "Min", "Max", "Upsample", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    ], StringComparer.Ordinal);

    /// <inheritdoc/>
    public string Name => "fp16";

    /// <summary>Further op types to keep in float32 (e.g. Softmax, LayerNormalization for accuracy); none by default.</summary>
    public IReadOnlySet<string> KeepFloat32OpTypes { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <inheritdoc/>
    public ISet<string> Exclude { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the nodes now computing in float16.</summary>
    /// <exception cref="OptimizeException">The model has If/Loop/Scan bodies.</exception>
    public List<string> Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        GraphProto graph = model.Proto.Graph;
        if (graph.Node.FirstOrDefault(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)) is { } nested)
        {
            throw new OptimizeException($"{model.Source}: node '{nested.Name}' ({nested.OpType}) has a subgraph; fp16 conversion of If/Loop/Scan bodies is not supported");
        }
        Dictionary<string, int> types = ElementTypes.Infer(graph);
        bool IsFloat(string value) => value.Length > 0 && types.GetValueOrDefault(value) == Float;
        bool Kept(NodeProto n) => !QuantizedGraph.IsDefaultDomain(n) || BlockList.Contains(n.OpType) || KeepFloat32OpTypes.Contains(n.OpType) || Exclude.Contains(n.Name);

        var names = new NameScope(graph);
        var readers = graph.Node.SelectMany(n => n.Input.Select(i => (Value: i, Node: n))).ToLookup(p => p.Value, p => p.Node, StringComparer.Ordinal);
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var overridable = new HashSet<string>(graph.Input.Select(i => i.Name), StringComparer.Ordinal);

        // Which float values are float16 after the rewrite; the rest of the float values stay float32.
        var half = new HashSet<string>(StringComparer.Ordinal);
        foreach (TensorProto initializer in graph.Initializer.Where(i => i.DataType == Float && !overridable.Contains(i.Name)))
        {
            if (readers[initializer.Name].Any(n => !Kept(n)) && !outputs.Contains(initializer.Name))
            {
                ToHalf(initializer);
                half.Add(initializer.Name);
            }
        }
        var converted = new List<string>();
        foreach (NodeProto node in graph.Node.Where(n => !Kept(n)))
        {
            bool touchesFloat = node.Input.Any(IsFloat) || node.Output.Any(IsFloat) || node.OpType is "Constant" or "ConstantOfShape";
            ConvertAttributes(node);
            foreach (string output in node.Output.Where(IsFloat))
            {
                half.Add(output);
            }
            if (touchesFloat)
            {
                converted.Add(node.Name);
            }
        }

        // Graph outputs computed in float16: the producer writes NAME_fp16, a final Cast writes NAME.
        var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (ValueInfoProto output in graph.Output.Where(o => half.Contains(o.Name)))
        {
            string inner = names.Next(output.Name + "_fp16");
            renamed[output.Name] = inner;
            half.Add(inner);
        }
        foreach (NodeProto node in graph.Node)
        {
            for (int i = 0; i < node.Output.Count; i++)
            {
                node.Output[i] = renamed.GetValueOrDefault(node.Output[i], node.Output[i]);
            }
            for (int i = 0; i < node.Input.Count; i++)
            {
                node.Input[i] = renamed.GetValueOrDefault(node.Input[i], node.Input[i]);
            }
        }

        var casts = new Dictionary<(string, bool), string>();
        var rewritten = new List<NodeProto>(graph.Node.Count * 2);
        string Cast(string value, bool toHalf)
        {
            if (!casts.TryGetValue((value, toHalf), out string? cast))
            {
                cast = names.Next(value + (toHalf ? "_fp16" : "_fp32"));
                casts[(value, toHalf)] = cast;
                rewritten.Add(QuantizedGraph.Node("Cast", names.Next(cast + "_Cast"), [value], [cast]).With("to", toHalf ? Half : Float));
            }
            return cast;
        }
        foreach (NodeProto node in graph.Node)
        {
            bool wantsHalf = !Kept(node);
            for (int i = 0; i < node.Input.Count; i++)
            {
                string input = node.Input[i];
                bool isFloat = IsFloat(input) || half.Contains(input);
                if (isFloat && half.Contains(input) != wantsHalf)
                {
                    node.Input[i] = Cast(input, wantsHalf);
                }
            }
            rewritten.Add(node);
        }
        foreach ((string output, string inner) in renamed)
        {
            rewritten.Add(QuantizedGraph.Node("Cast", names.Next(output + "_Cast"), [inner], [output]).With("to", Float));
        }
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
        foreach (ValueInfoProto info in graph.ValueInfo.Where(v => half.Contains(v.Name) && v.Type?.TensorType?.ElemType == Float))
        {
            info.Type.TensorType.ElemType = Half;
        }
        return converted;
    }

    private static void ConvertAttributes(NodeProto node)
    {
        switch (node.OpType)
        {
            case "Cast" when node.Attribute.FirstOrDefault(a => a.Name == "to") is { I: Float } to:
                to.I = Half;
                break;
            case "Constant" or "ConstantOfShape":
                AttributeProto? value = node.Attribute.FirstOrDefault(a => a.Name is "value" or "value_float" or "value_floats");
                if (value is null && node.OpType == "ConstantOfShape")
                {
                    value = new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = Initializers.FloatTensor("", [1], [0f]) };
                    node.Attribute.Add(value);
                }
                if (value is { Name: "value", T.DataType: Float })
                {
                    ToHalf(value.T);
                }
                else if (value is { Name: "value_float" or "value_floats" })
                {
                    TensorProto tensor = value.Name == "value_float" ? Initializers.FloatTensor("", [], [value.F]) : Initializers.FloatTensor("", [value.Floats.Count], [.. value.Floats]);
                    ToHalf(tensor);
                    node.Attribute.Remove(value);
                    node.Attribute.Add(new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = tensor });
                }
                break;
            case "RandomNormal" or "RandomUniform" or "RandomNormalLike" or "EyeLike" or "Bernoulli":
                if (node.Attribute.FirstOrDefault(a => a.Name == "dtype") is { } dtype)
                {
                    dtype.I = dtype.I == Float ? Half : dtype.I;
                }
                else if (node.OpType is "RandomNormal" or "RandomUniform")
                {
                    node.With("dtype", Half);
                }
                break;
        }
    }

    /// <summary>Converts a float32 tensor to float16 in place (values beyond ±65504 saturate there rather than becoming infinite).</summary>
    internal static void ToHalf(TensorProto tensor)
    {
        float[] values = Initializers.ReadFloats(tensor) ?? throw new OptimizeException($"initializer '{tensor.Name}': float data that cannot be read (external data?)");
        var bytes = new byte[values.Length * 2];
        for (int i = 0; i < values.Length; i++)
        {
            float v = float.IsFinite(values[i]) ? Math.Clamp(values[i], -65504f, 65504f) : values[i];
            System.Buffers.Binary.BinaryPrimitives.WriteHalfLittleEndian(bytes.AsSpan(i * 2), (Half)v);
        }
        tensor.DataType = Half;
        tensor.FloatData.Clear();
        tensor.RawData = ByteString.CopyFrom(bytes);
    }
}
