using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// Static int8 quantization in the QDQ form ONNX Runtime's CPU provider fuses back into integer kernels (QLinearConv,
/// QLinearMatMul, QGemm, QLinearAdd/Mul, QLinearConcat, QLinearAveragePool/GlobalAveragePool, int8 MaxPool…): weights
/// stored as int8 initializers read through DequantizeLinear (symmetric, one scale per output channel by default),
/// biases as int32 with scale input scale × weight scale, and every activation a quantized op reads or writes passed
/// through QuantizeLinear → DequantizeLinear with the scale and zero point of its calibrated range (uint8 asymmetric,
/// or int8 symmetric). A Relu right after a quantized op is folded into that op's output quantization (uint8 with zero
/// point 0 clamps at 0); pass-through ops (MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Gather,
/// Tile, Expand, DepthToSpace, SpaceToDepth, Resize, Split) keep their input's scale so ONNX Runtime can drop their Q/DQ pair. Float constants read by Add/Mul/Concat (a bias) are stored in
/// the activations' type over their own range. Each consumer gets its own DequantizeLinear. Needs opset 13
/// (per-channel DequantizeLinear) and the ranges from <see cref="Calibrator"/>.
/// </summary>
internal sealed class StaticInt8Quantizer : IQuantizer
{
    private const int FloatType = (int)TensorProto.Types.DataType.Float;

    /// <summary>
    /// Ops whose output holds values of their (first) input, or convex combinations of them (Resize, but not cubic, whose
    /// weights go negative and overshoot), so it can keep the input's scale: no new range to calibrate, and ONNX Runtime
    /// drops the Q/DQ pair around those it has integer kernels for.
    /// </summary>
    private static readonly HashSet<string> SameScale = new(StringComparer.Ordinal)
    {
        "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Tile", "Expand",
        "DepthToSpace", "SpaceToDepth", "Resize", "Split", "Pad",
    };

    private static readonly HashSet<string> OwnScale = new(StringComparer.Ordinal) { "AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu" };

    private static readonly HashSet<string> FloatPreserving = new(StringComparer.Ordinal)
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Tanh", "Softplus", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Erf", "Conv", "ConvTranspose", "MatMul",
        "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
        "InstanceNormalization", "LayerNormalization", "Softmax", "LogSoftmax", "Concat", "Reshape", "Flatten",
        "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Clip", "Pad", "Slice", "Split", "Gather", "Resize",
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Expand", "Tile", "Min", "Max", "Sum", "Mean", "LRN",
        "DequantizeLinear",
    };

    /// <inheritdoc/>
    public string Name => "int8-static";

    /// <inheritdoc/>
    public ISet<string> Exclude { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Calibrated float range of each activation (by value name).</summary>
    public IReadOnlyDictionary<string, TensorRange> Ranges { get; init; } = new Dictionary<string, TensorRange>();

    /// <summary>Activations as int8 symmetric (zero point 0) instead of uint8 asymmetric.</summary>
    public bool SymmetricActivations { get; init; }

    /// <summary>Weights with one scale per output channel (else one per tensor).</summary>
    public bool PerChannel { get; init; } = true;

    /// <summary>The activations whose ranges <see cref="Apply"/> may need (those read or written by the ops it quantizes, Relu outputs included).</summary>
    public static List<string> TensorsToCalibrate(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        GraphProto graph = model.Proto.Graph;
        HashSet<string> floats = FloatValues(model);
        HashSet<string> constants = Constants(model);
        var tensors = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (NodeProto node in graph.Node.Where(n => n.Domain is "" or "ai.onnx"))
        {
            if (node.OpType is "Conv" or "Gemm" or "MatMul" or "Add" or "Mul" or "Concat" or "Relu" || SameScale.Contains(node.OpType) || OwnScale.Contains(node.OpType))
            {
                foreach (string value in node.Input.Concat(node.Output).Where(v => v.Length > 0 && floats.Contains(v) && !constants.Contains(v) && seen.Add(v)))
                {
                    tensors.Add(value);
                }
            }
        }
        return tensors;
    }

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the nodes it quantized.</summary>
    /// <exception cref="OptimizeException">The opset is below 13.</exception>
    public List<string> Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.OpsetVersion < 13)
        {
            throw new OptimizeException($"{model.Source}: opset {model.OpsetVersion}; static int8 quantization needs opset 13 or newer (per-channel DequantizeLinear); the opset upgrade raises it");
        }
        GraphProto graph = model.Proto.Graph;
        HashSet<string> floats = FloatValues(model);
        HashSet<string> constants = Constants(model);
        var initializers = graph.Initializer.ToDictionary(i => i.Name, StringComparer.Ordinal);
        var index = new GraphIndex(graph);
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var activations = new HashSet<string>(StringComparer.Ordinal);
        var alias = new Dictionary<string, string>(StringComparer.Ordinal);
        var weights = new Dictionary<NodeProto, (int Input, int Axis)>(ReferenceEqualityComparer.Instance);
        var folds = new Dictionary<NodeProto, NodeProto>(ReferenceEqualityComparer.Instance);
        var constantInputs = new Dictionary<NodeProto, List<string>>(ReferenceEqualityComparer.Instance);
        var quantized = new List<string>();
        string Root(string t) => alias.TryGetValue(t, out string? r) ? r : t;
        bool IsActivation(string t) => t.Length > 0 && floats.Contains(t) && !constants.Contains(t);
        bool HasRange(string t) => Ranges.ContainsKey(Root(t));

        foreach (NodeProto node in index.TopologicalOrder())
        {
            if (node.Domain is not ("" or "ai.onnx") || Exclude.Contains(node.Name) || node.Output.Count == 0 || !floats.Contains(node.Output[0]))
            {
                continue;
            }
            List<string> reads;
            int weightInput = -1, axis = 0;
            if (SameScale.Contains(node.OpType))
            {
                string x = node.Input[0];
                // One output (Split: every part), none of them a graph output.
                if ((node.Output.Count != 1 && node.OpType != "Split") || !activations.Contains(x) || node.Output.Any(o => o.Length == 0 || outputs.Contains(o))
                    || (node.OpType == "Pad" && !PadsWithInputValuesOrZero(node, initializers))
                    || (node.OpType == "Resize" && node.Attribute.FirstOrDefault(a => a.Name == "mode")?.S.ToStringUtf8() == "cubic"))
                {
                    continue;
                }
                foreach (string part in node.Output)
                {
                    alias[part] = Root(x);
                    activations.Add(part);
                }
                quantized.Add(node.Name);
                continue;
            }
            switch (node.OpType)
            {
                case "Conv" when node.Input.Count >= 2 && IsWeight(node.Input[1], 3) && (node.Input.Count < 3 || IsBias(node.Input[2], initializers[node.Input[1]].Dims[0])):
                    reads = [node.Input[0]];
                    weightInput = 1;
                    axis = 0;
                    break;
                case "Gemm" when Int(node, "transA") == 0 && Float(node, "alpha") == 1 && Float(node, "beta") == 1 && IsWeight(node.Input[1], 2):
                    axis = Int(node, "transB") == 1 ? 0 : 1;
                    if (node.Input.Count >= 3 && node.Input[2].Length > 0 && !IsBias(node.Input[2], initializers[node.Input[1]].Dims[axis]))
                    {
                        continue;
                    }
                    reads = [node.Input[0]];
                    weightInput = 1;
                    break;
                case "MatMul" when IsWeight(node.Input[1], 2):
                    reads = [node.Input[0]];
                    weightInput = 1;
                    axis = 1;
                    break;
                case "MatMul" or "Add" or "Mul" when node.Input.Count == 2:
                    reads = [node.Input[0], node.Input[1]];
                    break;
                case "Concat" when node.Input.Count >= 1:
                    reads = [.. node.Input];
                    break;
                default:
                    if (!OwnScale.Contains(node.OpType) || node.Output.Count != 1)
                    {
                        continue;
                    }
                    reads = [node.Input[0]];
                    break;
            }
            string written = node.Output[0];
            NodeProto? relu = null;
            if (!SymmetricActivations && !outputs.Contains(written) && index.Consumers.GetValueOrDefault(written) is [{ OpType: "Relu" } only]
                && only.Domain is "" or "ai.onnx" && !Exclude.Contains(only.Name))
            {
                relu = only;
                written = only.Output[0];
            }
            // Add, Mul and Concat may read float constants (a bias after a MatMul): quantized like activations, over their own range.
            List<string> constantReads = node.OpType is "Add" or "Mul" or "Concat" ? [.. reads.Where(IsFloatConstant)] : [];
            reads = [.. reads.Except(constantReads)];
            if (reads.Count == 0 || !reads.All(IsActivation) || !reads.All(HasRange) || !HasRange(written) || node.Output.Count != 1)
            {
                continue;
            }
            if (constantReads.Count > 0)
            {
                constantInputs[node] = constantReads;
            }
            activations.UnionWith(reads);
            activations.Add(written);
            if (weightInput >= 0)
            {
                weights[node] = (weightInput, axis);
            }
            if (relu is not null)
            {
                folds[node] = relu;
                quantized.Add(relu.Name);
            }
            quantized.Add(node.Name);
        }

        if (quantized.Count == 0)
        {
            return quantized;
        }
        Rewrite(model, activations, alias, weights, folds, constantInputs, initializers);
        return quantized;

        bool IsWeight(string name, int minimumRank) =>
            constants.Contains(name) && initializers.TryGetValue(name, out TensorProto? w) && w.DataType == FloatType && w.Dims.Count >= minimumRank
            && (minimumRank != 2 || w.Dims.Count == 2) && w.DataLocation == TensorProto.Types.DataLocation.Default;

        bool IsFloatConstant(string name) =>
            constants.Contains(name) && initializers.TryGetValue(name, out TensorProto? c) && c.DataType == FloatType && c.DataLocation == TensorProto.Types.DataLocation.Default;

        bool IsBias(string name, long channels) =>
            name.Length == 0 || (constants.Contains(name) && initializers.TryGetValue(name, out TensorProto? b) && b.DataType == FloatType && b.Dims.Count == 1 && b.Dims[0] == channels);
    }

    private void Rewrite(OnnxModel model, HashSet<string> activations, Dictionary<string, string> alias, Dictionary<NodeProto, (int Input, int Axis)> weights,
        Dictionary<NodeProto, NodeProto> folds, Dictionary<NodeProto, List<string>> constantInputs, Dictionary<string, TensorProto> initializers)
    {
        GraphProto graph = model.Proto.Graph;
        var names = new NameScope(graph);
        foreach ((NodeProto producer, NodeProto relu) in folds)
        {
            Initializers.ForgetValue(graph, producer.Output[0]);
            producer.Output[0] = relu.Output[0];
            graph.Node.Remove(relu);
        }
        var index = new GraphIndex(graph);
        List<NodeProto> order = index.TopologicalOrder();
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);

        // Scale and zero point per root tensor (pass-through ops share their input's).
        var parameters = new Dictionary<string, (string Scale, string ZeroPoint, float ScaleValue)>(StringComparer.Ordinal);
        (string Scale, string ZeroPoint, float ScaleValue) Parameters(string tensor)
        {
            string root = alias.TryGetValue(tensor, out string? r) ? r : tensor;
            if (!parameters.TryGetValue(root, out var p))
            {
                (float scale, int zeroPoint) = ActivationParameters(Ranges[root]);
                string scaleName = names.Next(root + "_scale"), zeroPointName = names.Next(root + "_zero_point");
                graph.Initializer.Add(Scalar(scaleName, scale));
                var zp = new TensorProto
                {
                    Name = zeroPointName,
                    DataType = (int)(SymmetricActivations ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8),
                    RawData = ByteString.CopyFrom([unchecked((byte)zeroPoint)]),
                };
                graph.Initializer.Add(zp);
                parameters[root] = p = (scaleName, zeroPointName, scale);
            }
            return p;
        }

        var quantizedName = new Dictionary<string, string>(StringComparer.Ordinal);
        var rewritten = new List<NodeProto>(order.Count * 2);
        void Quantize(string tensor, string source)
        {
            var p = Parameters(tensor);
            string q = names.Next(tensor + "_quantized");
            rewritten.Add(Node("QuantizeLinear", names.Next(tensor + "_QuantizeLinear"), [source, p.Scale, p.ZeroPoint], [q]));
            quantizedName[tensor] = q;
        }
        string Dequantized(string tensor)
        {
            var p = Parameters(tensor);
            string dq = names.Next(tensor + "_dequantized");
            rewritten.Add(Node("DequantizeLinear", names.Next(tensor + "_DequantizeLinear"), [quantizedName[tensor], p.Scale, p.ZeroPoint], [dq]));
            return dq;
        }

        var produced = new HashSet<string>(order.SelectMany(n => n.Output), StringComparer.Ordinal);
        foreach (string input in activations.Where(a => !produced.Contains(a)).Order(StringComparer.Ordinal))
        {
            Quantize(input, input);
        }
        var weightCache = new Dictionary<(string, int), (string Quantized, string Scale, string ZeroPoint, float[] Scales)>();
        var replacedWeights = new List<string>();
        var constantCache = new Dictionary<string, (string Quantized, string Scale, string ZeroPoint)>(StringComparer.Ordinal);
        foreach (NodeProto node in order)
        {
            string firstInput = node.Input.Count > 0 ? node.Input[0] : "";
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (activations.Contains(node.Input[i]))
                {
                    node.Input[i] = Dequantized(node.Input[i]);
                }
            }
            if (constantInputs.TryGetValue(node, out List<string>? constantsRead))
            {
                for (int i = 0; i < node.Input.Count; i++)
                {
                    if (constantsRead.Contains(node.Input[i]))
                    {
                        string name = node.Input[i];
                        if (!constantCache.TryGetValue(name, out var qc))
                        {
                            constantCache[name] = qc = QuantizeConstant(graph, names, initializers[name]);
                        }
                        replacedWeights.Add(name);
                        string dq = names.Next(name + "_dequantized");
                        rewritten.Add(Node("DequantizeLinear", names.Next(name + "_DequantizeLinear"), [qc.Quantized, qc.Scale, qc.ZeroPoint], [dq]));
                        node.Input[i] = dq;
                    }
                }
            }
            if (weights.TryGetValue(node, out var w))
            {
                string weightName = node.Input[w.Input];
                if (!weightCache.TryGetValue((weightName, w.Axis), out var qw))
                {
                    qw = QuantizeWeight(graph, names, initializers[weightName], w.Axis);
                    weightCache[(weightName, w.Axis)] = qw;
                }
                replacedWeights.Add(weightName);
                string dq = names.Next(weightName + "_dequantized");
                NodeProto weightDq = Node("DequantizeLinear", names.Next(weightName + "_DequantizeLinear"), [qw.Quantized, qw.Scale, qw.ZeroPoint], [dq]);
                if (PerChannel)
                {
                    weightDq.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = w.Axis });
                }
                rewritten.Add(weightDq);
                node.Input[w.Input] = dq;
                if (node.Input.Count > 2 && node.Input[2].Length > 0)
                {
                    string biasName = node.Input[2];
                    float inputScale = Parameters(firstInput).ScaleValue;
                    replacedWeights.Add(biasName);
                    node.Input[2] = QuantizeBias(graph, names, rewritten, initializers[biasName], inputScale, qw.Scales);
                }
            }
            rewritten.Add(node);
            foreach (string output in node.Output.Where(activations.Contains))
            {
                if (outputs.Contains(output))
                {
                    string source = names.Next(output + "_float");
                    node.Output[node.Output.IndexOf(output)] = source;
                    Quantize(output, source);
                    var p = Parameters(output);
                    rewritten.Add(Node("DequantizeLinear", names.Next(output + "_DequantizeLinear"), [quantizedName[output], p.Scale, p.ZeroPoint], [output]));
                }
                else
                {
                    Quantize(output, output);
                }
            }
        }
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
        Initializers.RemoveUnread(graph, replacedWeights);
    }

    private (float Scale, int ZeroPoint) ActivationParameters(TensorRange range)
    {
        float low = Math.Min(range.Min, 0), high = Math.Max(range.Max, 0);
        if (SymmetricActivations)
        {
            float bound = Math.Max(-low, high);
            return (bound > 0 ? bound / 127f : 1f, 0);
        }
        float scale = (high - low) / 255f;
        if (!(scale > 0) || float.IsInfinity(scale))
        {
            return (1f, 0);
        }
        return (scale, (int)Math.Clamp(MathF.Round(-low / scale, MidpointRounding.ToEven), 0, 255));
    }

    /// <summary>A float constant read by Add/Mul/Concat, in the activations' type over its own range (one scale).</summary>
    private (string Quantized, string Scale, string ZeroPoint) QuantizeConstant(GraphProto graph, NameScope names, TensorProto constant)
    {
        float[] values = FloatTensor.Read(constant);
        var range = new TensorRange(values.Length > 0 ? values.Min() : 0, values.Length > 0 ? values.Max() : 0);
        (float scale, int zeroPoint) = ActivationParameters(range);
        var bytes = new byte[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            float q = MathF.Round(values[i] / scale, MidpointRounding.ToEven) + zeroPoint;
            bytes[i] = SymmetricActivations ? unchecked((byte)(sbyte)Math.Clamp(q, -127f, 127f)) : (byte)Math.Clamp(q, 0f, 255f);
        }
        var type = SymmetricActivations ? TensorProto.Types.DataType.Int8 : TensorProto.Types.DataType.Uint8;
        string quantizedName = names.Next(constant.Name + "_quantized"), scaleName = names.Next(constant.Name + "_scale"), zeroPointName = names.Next(constant.Name + "_zero_point");
        var quantized = new TensorProto { Name = quantizedName, DataType = (int)type, RawData = ByteString.CopyFrom(bytes) };
        quantized.Dims.AddRange(constant.Dims);
        graph.Initializer.Add(quantized);
        graph.Initializer.Add(Scalar(scaleName, scale));
        graph.Initializer.Add(new TensorProto { Name = zeroPointName, DataType = (int)type, RawData = ByteString.CopyFrom([unchecked((byte)zeroPoint)]) });
        return (quantizedName, scaleName, zeroPointName);
    }

    /// <summary>Symmetric int8 weights, scale max|W|/127 per slice along <paramref name="axis"/> (or per tensor), zero points 0.</summary>
    private (string Quantized, string Scale, string ZeroPoint, float[] Scales) QuantizeWeight(GraphProto graph, NameScope names, TensorProto weight, int axis)
    {
        float[] values = FloatTensor.Read(weight);
        long[] dims = [.. weight.Dims];
        int channels = PerChannel ? (int)dims[axis] : 1;
        long stride = dims.Skip(axis + 1).Aggregate(1L, (a, b) => a * b);
        int Channel(long i) => PerChannel ? (int)(i / stride % dims[axis]) : 0;
        var scales = new float[channels];
        for (long i = 0; i < values.Length; i++)
        {
            int c = Channel(i);
            scales[c] = Math.Max(scales[c], MathF.Abs(values[i]));
        }
        for (int c = 0; c < channels; c++)
        {
            scales[c] = scales[c] > 0 ? scales[c] / 127f : 1f;
        }
        var bytes = new byte[values.Length];
        for (long i = 0; i < values.Length; i++)
        {
            bytes[i] = unchecked((byte)(sbyte)Math.Clamp(MathF.Round(values[i] / scales[Channel(i)], MidpointRounding.ToEven), -127f, 127f));
        }
        string quantizedName = names.Next(weight.Name + "_quantized"), scaleName = names.Next(weight.Name + "_scale"), zeroPointName = names.Next(weight.Name + "_zero_point");
        var quantized = new TensorProto { Name = quantizedName, DataType = (int)TensorProto.Types.DataType.Int8, RawData = ByteString.CopyFrom(bytes) };
        quantized.Dims.AddRange(dims);
        TensorProto scale = Initializers.FloatTensor(scaleName, PerChannel ? [channels] : [], scales);
        var zeroPoint = new TensorProto { Name = zeroPointName, DataType = (int)TensorProto.Types.DataType.Int8, RawData = ByteString.CopyFrom(new byte[channels]) };
        if (PerChannel)
        {
            zeroPoint.Dims.Add(channels);
        }
        graph.Initializer.Add(quantized);
        graph.Initializer.Add(scale);
        graph.Initializer.Add(zeroPoint);
        return (quantizedName, scaleName, zeroPointName, scales);
    }

    /// <summary>Bias as int32 with scale input scale × weight scale (per channel when the weight is), zero point 0, read through DequantizeLinear.</summary>
    private string QuantizeBias(GraphProto graph, NameScope names, List<NodeProto> nodes, TensorProto bias, float inputScale, float[] weightScales)
    {
        float[] values = FloatTensor.Read(bias);
        var scales = new float[weightScales.Length];
        var bytes = new byte[values.Length * sizeof(int)];
        for (int c = 0; c < weightScales.Length; c++)
        {
            scales[c] = inputScale * weightScales[c];
        }
        for (int i = 0; i < values.Length; i++)
        {
            float scale = scales[PerChannel ? i : 0];
            int q = (int)Math.Clamp(Math.Round(values[i] / (double)scale, MidpointRounding.ToEven), int.MinValue, int.MaxValue);
            BitConverter.TryWriteBytes(bytes.AsSpan(i * sizeof(int)), q);
        }
        string quantizedName = names.Next(bias.Name + "_quantized"), scaleName = names.Next(bias.Name + "_scale"), zeroPointName = names.Next(bias.Name + "_zero_point");
        var quantized = new TensorProto { Name = quantizedName, DataType = (int)TensorProto.Types.DataType.Int32, RawData = ByteString.CopyFrom(bytes) };
        quantized.Dims.AddRange(bias.Dims);
        var zeroPoint = new TensorProto { Name = zeroPointName, DataType = (int)TensorProto.Types.DataType.Int32, RawData = ByteString.CopyFrom(new byte[scales.Length * sizeof(int)]) };
        if (PerChannel)
        {
            zeroPoint.Dims.Add(scales.Length);
        }
        graph.Initializer.Add(quantized);
        graph.Initializer.Add(Initializers.FloatTensor(scaleName, PerChannel ? [scales.Length] : [], scales));
        graph.Initializer.Add(zeroPoint);
        string dq = names.Next(bias.Name + "_dequantized");
        NodeProto node = Node("DequantizeLinear", names.Next(bias.Name + "_DequantizeLinear"), [quantizedName, scaleName, zeroPointName], [dq]);
        if (PerChannel)
        {
            node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
        }
        nodes.Add(node);
        return dq;
    }

    /// <summary>Values known to be float32: float graph inputs, initializers and declared values, and what float-preserving ops make of them.</summary>
    internal static HashSet<string> FloatValues(OnnxModel model)
    {
        GraphProto graph = model.Proto.Graph;
        var floats = new HashSet<string>(StringComparer.Ordinal);
        floats.UnionWith(graph.Input.Concat(graph.ValueInfo).Concat(graph.Output).Where(v => v.Type?.TensorType?.ElemType == FloatType).Select(v => v.Name));
        floats.UnionWith(graph.Initializer.Where(i => i.DataType == FloatType).Select(i => i.Name));
        foreach (NodeProto node in new GraphIndex(graph).TopologicalOrder().Where(n => n.Domain is "" or "ai.onnx"))
        {
            bool isFloat = node.OpType switch
            {
                "Cast" => Int(node, "to") == FloatType,
                "Constant" => node.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.DataType == FloatType || node.Attribute.Any(a => a.Name is "value_float" or "value_floats"),
                "Where" => node.Input.Count > 1 && floats.Contains(node.Input[1]),
                "DequantizeLinear" => true,
                _ => FloatPreserving.Contains(node.OpType) && node.Input.Count > 0 && floats.Contains(node.Input[0]),
            };
            if (isFloat)
            {
                floats.UnionWith(node.OpType is "Split" ? node.Output : node.Output.Take(1));
            }
        }
        return floats;
    }

    private static HashSet<string> Constants(OnnxModel model) =>
        new(model.Proto.Graph.Initializer.Select(i => i.Name).Where(n => Initializers.FindConstant(model.Proto, n) is not null), StringComparer.Ordinal);

    /// <summary>
    /// Whether a Pad adds only values its input has (edge, reflect, wrap) or zeros, which the activations' range always
    /// holds exactly (it is widened to include 0): a constant pad of any other value would need its own range.
    /// </summary>
    private static bool PadsWithInputValuesOrZero(NodeProto node, Dictionary<string, TensorProto> initializers)
    {
        string mode = node.Attribute.FirstOrDefault(a => a.Name == "mode")?.S.ToStringUtf8() ?? "constant";
        if (mode != "constant" || node.Input.Count < 3 || node.Input[2].Length == 0)
        {
            return true;
        }
        return initializers.TryGetValue(node.Input[2], out TensorProto? value) && value.DataType == FloatType
            && FloatTensor.Read(value) is [0f];
    }

    private static long Int(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I ?? 0;

    private static float Float(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.F ?? 1f;

    private static TensorProto Scalar(string name, float value) => Initializers.FloatTensor(name, [], [value]);

    private static NodeProto Node(string op, string name, string[] inputs, string[] outputs)
    {
        var node = new NodeProto { OpType = op, Name = name };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        return node;
    }
}
