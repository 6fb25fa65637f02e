using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Raises the default-domain opset of a model (e.g. a CNTK export at opset 8) to <see cref="Target"/> (13: what
/// per-channel DequantizeLinear needs), rewriting the nodes whose signature changed on the way: attributes that became
/// inputs (Reshape shape, Clip min/max, Pad pads/value, Split split, Squeeze/Unsqueeze/ReduceSum axes, Slice
/// starts/ends/axes/steps, TopK k, Dropout ratio), attributes that were removed (consumed_inputs, is_test,
/// BatchNormalization spatial, Gemm broadcast), Upsample into Resize, and Softmax/LogSoftmax/Hardmax, whose axis
/// stopped meaning "coerce to 2-D from here" at 13 (a Flatten and a Reshape are added only when the axis is not the
/// last one). Ops it does not know are refused by name rather than guessed. The IR version is raised with the opset;
/// initializers that IR 3 listed among the graph inputs are taken out of them, so that they stay constants.
/// </summary>
internal sealed class OpsetUpgrade(int target = 13)
{
    private const int Int64Type = (int)TensorProto.Types.DataType.Int64;
    private const int FloatType = (int)TensorProto.Types.DataType.Float;

    /// <summary>Ops this upgrade knows: unchanged between opset 7 and 13 but for type extensions and new optional inputs or attributes whose default is the old behaviour, or rewritten below.</summary>
    private static readonly HashSet<string> Known = new(StringComparer.Ordinal)
    {
        "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
        "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid",
        "HardSigmoid", "Tanh", "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Floor", "Ceil",
        "Concat", "Flatten", "Transpose", "Identity", "Shape", "Size", "Gather", "Constant", "Cast", "Sum", "Max",
        "Min", "Mean", "LRN", "InstanceNormalization", "BatchNormalization", "Dropout", "Tile", "Expand", "Equal",
        "Greater", "Less", "Not", "And", "Or", "Xor", "Where", "ConstantOfShape", "Erf", "Sin", "Cos", "Tan", "Asin",
        "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Sign", "Range", "ArgMax", "ArgMin", "ReduceMean",
        "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceSumSquare", "DepthToSpace", "SpaceToDepth", "MatMulInteger", "ConvInteger", "QuantizeLinear",
        "DequantizeLinear", "QLinearConv", "QLinearMatMul", "NonZero", "OneHot", "Einsum", "Round", "IsNaN", "IsInf",
        "Mod", "BitShift", "CumSum", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Compress",
        "NonMaxSuppression", "RoiAlign", "MaxRoiPool", "EyeLike", "Det", "MeanVarianceNormalization", "Celu",
        "GreaterOrEqual", "LessOrEqual", "ThresholdedRelu", "HardSwish", "Reshape", "Clip", "Pad", "Split", "Squeeze",
        "Unsqueeze", "ReduceSum", "Slice", "TopK", "Softmax", "LogSoftmax", "Hardmax", "Upsample", "Resize",
    };

    /// <summary>The opset the model ends at.</summary>
    public int Target { get; } = target;

    /// <summary>Upgrades <paramref name="model"/> in place; returns how many nodes were rewritten (0 when it already is at or above the target).</summary>
    /// <exception cref="OptimizeException">A node's op cannot be upgraded (names the node, op and opsets).</exception>
    public int Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        int from = (int)model.OpsetVersion;
        if (from >= Target)
        {
            return 0;
        }
        if (from < 7)
        {
            throw new OptimizeException($"{model.Source}: opset {from} is older than 7 (legacy broadcasting); only opsets 7 to {Target - 1} can be raised to {Target}");
        }
        ModelProto proto = model.Proto;
        var context = new Upgrade(from, Target, model.Source);
        int changed = context.Graph(proto.Graph);
        foreach (OperatorSetIdProto opset in proto.OpsetImport.Where(o => o.Domain is "" or "ai.onnx"))
        {
            opset.Version = Target;
        }
        if (proto.IrVersion < 7)
        {
            var initializers = new HashSet<string>(proto.Graph.Initializer.Select(i => i.Name), StringComparer.Ordinal);
            foreach (ValueInfoProto input in proto.Graph.Input.Where(i => initializers.Contains(i.Name)).ToList())
            {
                proto.Graph.Input.Remove(input);
            }
            proto.IrVersion = 7;
        }
        return changed;
    }

    private sealed class Upgrade(int from, int to, string source)
    {
        public int Graph(GraphProto graph)
        {
            var names = new NameScope(graph);
            var rewritten = new List<NodeProto>(graph.Node.Count);
            int changed = 0;
            foreach (NodeProto node in graph.Node)
            {
                foreach (AttributeProto attribute in node.Attribute)
                {
                    foreach (GraphProto body in attribute.G is null ? attribute.Graphs : attribute.Graphs.Append(attribute.G))
                    {
                        changed += Graph(body);
                    }
                }
                if (node.Domain is not ("" or "ai.onnx"))
                {
                    rewritten.Add(node);
                    continue;
                }
                if (!Known.Contains(node.OpType) && node.OpType is not ("If" or "Loop"))
                {
                    throw new OptimizeException($"{source}: node '{node.Name}' ({node.OpType}): Kiln cannot upgrade {node.OpType} from opset {from} to {to}");
                }
                int before = rewritten.Count;
                bool modified = Node(graph, node, names, rewritten);
                if (rewritten.Count == before)
                {
                    rewritten.Add(node);
                }
                changed += modified ? 1 : 0;
            }
            graph.Node.Clear();
            graph.Node.AddRange(rewritten);
            return changed;
        }

        /// <summary>Rewrites one node in place, or appends its replacement nodes to <paramref name="output"/>; true when something changed.</summary>
        private bool Node(GraphProto graph, NodeProto node, NameScope names, List<NodeProto> output)
        {
            bool changed = Remove(node, "consumed_inputs") | Remove(node, "is_test");
            switch (node.OpType)
            {
                case "BatchNormalization":
                    if (Int(node, "spatial") is 0)
                    {
                        throw new OptimizeException($"{source}: node '{node.Name}' (BatchNormalization) has spatial=0, which opset 9 removed; Kiln cannot upgrade it");
                    }
                    return Remove(node, "spatial") | changed;
                case "Gemm":
                    return Remove(node, "broadcast") | changed;
                case "Dropout" when from < 12:
                    if (Float(node, "ratio") is { } ratio && Remove(node, "ratio"))
                    {
                        SetInput(node, 1, Constant(graph, names, node.Name + "_ratio", FloatType, [], [ratio]));
                        return true;
                    }
                    return changed;
                case "Reshape" when from < 5:
                    return AttributeToInput(graph, names, node, "shape", 1) | changed;
                case "Clip" when from < 11:
                    {
                        float? low = Float(node, "min"), high = Float(node, "max");
                        if (low is null && high is null)
                        {
                            return changed;
                        }
                        Remove(node, "min");
                        Remove(node, "max");
                        SetInput(node, 1, low is { } l ? Constant(graph, names, node.Name + "_min", FloatType, [], [l]) : "");
                        SetInput(node, 2, high is { } h ? Constant(graph, names, node.Name + "_max", FloatType, [], [h]) : "");
                        return true;
                    }
                case "Pad" when from < 11:
                    {
                        long[] pads = Ints(node, "pads") ?? throw new OptimizeException($"{source}: node '{node.Name}' (Pad) has no pads attribute");
                        float value = Float(node, "value") ?? 0;
                        Remove(node, "pads");
                        Remove(node, "value");
                        SetInput(node, 1, Constant(graph, names, node.Name + "_pads", Int64Type, [pads.Length], pads));
                        if (value != 0)
                        {
                            SetInput(node, 2, Constant(graph, names, node.Name + "_value", FloatType, [], [value]));
                        }
                        return true;
                    }
                case "Split" when from < 13:
                    return AttributeToInput(graph, names, node, "split", 1) | changed;
                case "Squeeze" or "Unsqueeze" or "ReduceSum" when from < 13:
                    return AttributeToInput(graph, names, node, "axes", 1) | changed;
                case "Slice" when from < 10:
                    {
                        long[] starts = Ints(node, "starts")!, ends = Ints(node, "ends")!;
                        long[]? axes = Ints(node, "axes");
                        Remove(node, "starts");
                        Remove(node, "ends");
                        Remove(node, "axes");
                        SetInput(node, 1, Constant(graph, names, node.Name + "_starts", Int64Type, [starts.Length], starts));
                        SetInput(node, 2, Constant(graph, names, node.Name + "_ends", Int64Type, [ends.Length], ends));
                        if (axes is not null)
                        {
                            SetInput(node, 3, Constant(graph, names, node.Name + "_axes", Int64Type, [axes.Length], axes));
                        }
                        return true;
                    }
                case "TopK" when from < 10:
                    {
                        long k = Int(node, "k") ?? throw new OptimizeException($"{source}: node '{node.Name}' (TopK) has no k attribute");
                        Remove(node, "k");
                        SetInput(node, 1, Constant(graph, names, node.Name + "_k", Int64Type, [1], [k]));
                        return true;
                    }
                case "Upsample":
                    return UpsampleToResize(graph, node, names);
                case "Resize" when from < 11:
                    // Resize-10 samples like Upsample (asymmetric coordinates, nearest rounds down).
                    node.Input.Insert(1, Constant(graph, names, node.Name + "_roi", FloatType, [0], Array.Empty<float>()));
                    SetString(node, "coordinate_transformation_mode", "asymmetric");
                    if ((String(node, "mode") ?? "nearest") == "nearest")
                    {
                        SetString(node, "nearest_mode", "floor");
                    }
                    return true;
                case "Softmax" or "LogSoftmax" or "Hardmax" when from < 13:
                    return Softmax(graph, node, names, output) | changed;
                default:
                    return changed;
            }
        }

        private bool UpsampleToResize(GraphProto graph, NodeProto node, NameScope names)
        {
            string mode = String(node, "mode") ?? "nearest";
            string scales;
            if (from < 9)
            {
                float[] values = Floats(node, "scales") ?? throw new OptimizeException($"{source}: node '{node.Name}' (Upsample) has no scales attribute");
                Remove(node, "scales");
                scales = Constant(graph, names, node.Name + "_scales", FloatType, [values.Length], values);
            }
            else
            {
                scales = node.Input[1];
            }
            string x = node.Input[0];
            node.OpType = "Resize";
            node.Input.Clear();
            // X, roi (unused with asymmetric coordinates), scales: Upsample's sampling is Resize's asymmetric one, nearest rounding down.
            node.Input.Add(x);
            node.Input.Add(Constant(graph, names, node.Name + "_roi", FloatType, [0], Array.Empty<float>()));
            node.Input.Add(scales);
            SetString(node, "mode", mode == "bilinear" ? "linear" : mode);
            SetString(node, "coordinate_transformation_mode", "asymmetric");
            if (mode == "nearest")
            {
                SetString(node, "nearest_mode", "floor");
            }
            return true;
        }

        private static bool Softmax(GraphProto graph, NodeProto node, NameScope names, List<NodeProto> output)
        {
            long axis = Int(node, "axis") ?? 1;
            long[]? shape = Initializers.Shape(graph, node.Input[0]);
            int? rank = shape?.Length;
            if (axis == -1 || (rank is { } r && axis == r - 1))
            {
                SetInt(node, "axis", -1);
                return true;
            }
            // Old semantics: flatten to 2-D at the axis, normalize the rows, restore the shape.
            string x = node.Input[0], y = node.Output[0];
            string flat = names.Next(x + "_flat"), normalized = names.Next(y + "_2d"), shapeValue = names.Next(x + "_shape");
            var flatten = new NodeProto { OpType = "Flatten", Name = names.Next(node.Name + "_flatten") };
            flatten.Input.Add(x);
            flatten.Output.Add(flat);
            flatten.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = axis });
            var shapeOf = new NodeProto { OpType = "Shape", Name = names.Next(node.Name + "_shape") };
            shapeOf.Input.Add(x);
            shapeOf.Output.Add(shapeValue);
            SetInt(node, "axis", 1);
            node.Input[0] = flat;
            node.Output[0] = normalized;
            var reshape = new NodeProto { OpType = "Reshape", Name = names.Next(node.Name + "_restore") };
            reshape.Input.Add(normalized);
            reshape.Input.Add(shapeValue);
            reshape.Output.Add(y);
            output.Add(flatten);
            output.Add(shapeOf);
            output.Add(node);
            output.Add(reshape);
            return true;
        }

        private static bool AttributeToInput(GraphProto graph, NameScope names, NodeProto node, string attribute, int index)
        {
            if (Ints(node, attribute) is not { } values)
            {
                return false;
            }
            Remove(node, attribute);
            SetInput(node, index, Constant(graph, names, $"{node.Name}_{attribute}", Int64Type, [values.Length], values));
            return true;
        }

        private static string Constant(GraphProto graph, NameScope names, string stem, int type, long[] dims, IEnumerable<double> values)
        {
            string name = names.Next(stem.Length == 0 ? "constant" : stem);
            var tensor = new TensorProto { Name = name, DataType = type };
            tensor.Dims.AddRange(dims);
            double[] all = [.. values];
            byte[] bytes = type == Int64Type
                ? [.. all.SelectMany(v => BitConverter.GetBytes((long)v))]
                : [.. all.SelectMany(v => BitConverter.GetBytes((float)v))];
            tensor.RawData = ByteString.CopyFrom(bytes);
            // The IR version is raised to 7 afterwards: new initializers need not be graph inputs.
            graph.Initializer.Add(tensor);
            return name;
        }

        private static string Constant(GraphProto graph, NameScope names, string stem, int type, long[] dims, long[] values) =>
            Constant(graph, names, stem, type, dims, values.Select(v => (double)v));

        private static string Constant(GraphProto graph, NameScope names, string stem, int type, long[] dims, float[] values) =>
            Constant(graph, names, stem, type, dims, values.Select(v => (double)v));

        private static void SetInput(NodeProto node, int index, string value)
        {
            while (node.Input.Count <= index)
            {
                node.Input.Add("");
            }
            node.Input[index] = value;
            while (node.Input.Count > 0 && node.Input[^1].Length == 0)
            {
                node.Input.RemoveAt(node.Input.Count - 1);
            }
        }

        private static AttributeProto? Find(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

        private static bool Remove(NodeProto node, string name) => Find(node, name) is { } a && node.Attribute.Remove(a);

        private static long? Int(NodeProto node, string name) => Find(node, name)?.I;

        private static float? Float(NodeProto node, string name) => Find(node, name)?.F;

        private static long[]? Ints(NodeProto node, string name) => Find(node, name) is { } a ? [.. a.Ints] : null;

        private static float[]? Floats(NodeProto node, string name) => Find(node, name) is { } a ? [.. a.Floats] : null;

        private static string? String(NodeProto node, string name) => Find(node, name)?.S.ToStringUtf8();

        private static void SetInt(NodeProto node, string name, long value)
        {
            Remove(node, name);
            node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
        }

        private static void SetString(NodeProto node, string name, string value)
        {
            Remove(node, name);
            node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) });
        }
    }
}
