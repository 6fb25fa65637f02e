using System.Buffers.Binary;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Graph;

/// <summary>One dimension (or one element of a small integer tensor): a known number, a symbol (the same symbol is the same size), or unknown.</summary>
internal readonly record struct Dim(long? Number, string? Symbol)
{
    public static readonly Dim Unknown = new(null, null);

    public bool IsKnown => Number.HasValue;

    /// <summary>The number; -1 when not known.</summary>
    public long Value => Number ?? -1;

    public static Dim Of(long value) => new(value, null);

    public static Dim Named(string symbol) => new(null, symbol);

    /// <summary>Known to be the same size as <paramref name="other"/>: equal numbers or equal symbols.</summary>
    public bool SameAs(Dim other) => (IsKnown && Number == other.Number) || (Symbol is not null && Symbol == other.Symbol);

    public override string ToString() => Number?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? Symbol ?? "?";
}

/// <summary>A value's element type (TensorProto.DataType; 0 unknown) and shape (null when even the rank is unknown).</summary>
internal sealed record InferredType(int ElemType, Dim[]? Shape)
{
    public int? Rank => Shape?.Length;
}

/// <summary>
/// Shape and type inference over the main graph, in topological order, for the common operators. Symbolic dimensions
/// (graph inputs' dim_param) travel by name; sizes that depend on values stay known when those values are constants
/// or come from Shape (small integer tensors are followed through Shape, Gather, Concat, Unsqueeze, Slice, Cast and
/// integer arithmetic, so Shape → Gather → Concat → Reshape keeps its symbols). What cannot be inferred is unknown.
/// </summary>
internal sealed class ShapeInference
{
    private const int MaxTrackedValues = 64;
    private const int Float = (int)TensorProto.Types.DataType.Float;
    private const int Int64 = (int)TensorProto.Types.DataType.Int64;
    private const int Bool = (int)TensorProto.Types.DataType.Bool;
    private const int Uint8 = (int)TensorProto.Types.DataType.Uint8;
    private const int Int32 = (int)TensorProto.Types.DataType.Int32;

    private static readonly HashSet<string> SameShape = new(StringComparer.Ordinal)
    {
        "Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Gelu", "FastGelu", "QuickGelu",
        "Softmax", "LogSoftmax", "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "Identity",
        "Dropout", "BatchNormalization", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Clip", "Floor", "Ceil",
        "Round", "Not", "Sign", "Softplus", "Softsign", "Mish", "InstanceNormalization", "LRN", "Sin", "Cos", "IsNaN",
        "IsInf", "BiasGelu", "Celu", "ThresholdedRelu", "Hardmax", "CumSum",
    };

    private static readonly HashSet<string> Broadcasting = new(StringComparer.Ordinal)
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "PRelu", "Sum", "Mean", "And", "Or", "Xor", "Equal", "Less",
        "Greater", "LessOrEqual", "GreaterOrEqual", "BitShift", "Where",
    };

    private static readonly HashSet<string> Comparisons = new(StringComparer.Ordinal)
    {
        "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Not", "IsNaN", "IsInf",
    };

    private readonly ModelProto _model;
    private readonly long _opset;
    private readonly Dictionary<string, InferredType> _types = new(StringComparer.Ordinal);

    /// <summary>The contents of small integer tensors (rank 0 or 1), element by element.</summary>
    private readonly Dictionary<string, Dim[]> _values = new(StringComparer.Ordinal);

    private ShapeInference(ModelProto model)
    {
        _model = model;
        _opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1;
    }

    /// <summary>The inferred type of every value of the main graph (inputs, initializers and node outputs).</summary>
    public static Dictionary<string, InferredType> Infer(ModelProto model)
    {
        var inference = new ShapeInference(model);
        inference.Run();
        return inference._types;
    }

    /// <summary>
    /// Writes the inferred types of node outputs into the graph's value_info (replacing entries for the same values;
    /// graph outputs keep their declarations); returns how many values have a known rank.
    /// </summary>
    public static int Apply(ModelProto model)
    {
        Dictionary<string, InferredType> types = Infer(model);
        GraphProto graph = model.Graph;
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var written = new List<ValueInfoProto>();
        foreach (string name in graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0 && !outputs.Contains(o)))
        {
            if (types.TryGetValue(name, out InferredType? type) && type.Shape is not null)
            {
                written.Add(ToValueInfo(name, type));
            }
        }
        var names = new HashSet<string>(written.Select(w => w.Name), StringComparer.Ordinal);
        foreach (ValueInfoProto stale in graph.ValueInfo.Where(v => names.Contains(v.Name)).ToList())
        {
            graph.ValueInfo.Remove(stale);
        }
        graph.ValueInfo.AddRange(written);
        return written.Count;
    }

    public static ValueInfoProto ToValueInfo(string name, InferredType type)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = type.ElemType };
        if (type.Shape is not null)
        {
            tensor.Shape = new TensorShapeProto();
            foreach (Dim d in type.Shape)
            {
                var dim = new TensorShapeProto.Types.Dimension();
                if (d.IsKnown)
                {
                    dim.DimValue = d.Value;
                }
                else if (d.Symbol is not null)
                {
                    dim.DimParam = d.Symbol;
                }
                tensor.Shape.Dim.Add(dim);
            }
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    public static InferredType? FromValueInfo(ValueInfoProto info)
    {
        if (info.Type?.TensorType is not { } tensor)
        {
            return null;
        }
        Dim[]? shape = tensor.Shape is null ? null
            : [.. tensor.Shape.Dim.Select(d => d.HasDimValue ? Dim.Of(d.DimValue) : d.HasDimParam && d.DimParam.Length > 0 ? Dim.Named(d.DimParam) : Dim.Unknown)];
        return new InferredType(tensor.ElemType, shape);
    }

    private void Run()
    {
        GraphProto graph = _model.Graph;
        foreach (ValueInfoProto input in graph.Input)
        {
            if (FromValueInfo(input) is { } type)
            {
                _types[input.Name] = type;
            }
        }
        foreach (TensorProto initializer in graph.Initializer)
        {
            _types[initializer.Name] = new InferredType(initializer.DataType, [.. initializer.Dims.Select(Dim.Of)]);
            // An initializer that is also a graph input (IR 4+) may be overridden at run time: its values are not known.
            if (Initializers.FindConstant(_model, initializer.Name) is not null && ReadIntegers(initializer) is { } values)
            {
                _values[initializer.Name] = values;
            }
        }
        var declared = new Dictionary<string, InferredType>(StringComparer.Ordinal);
        foreach (ValueInfoProto info in graph.ValueInfo.Concat(graph.Output))
        {
            if (FromValueInfo(info) is { } type)
            {
                declared[info.Name] = type;
            }
        }
        foreach (NodeProto node in new GraphIndex(graph).TopologicalOrder())
        {
            InferredType?[] outputs;
            try
            {
                outputs = InferNode(node);
            }
            catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or InvalidOperationException or OverflowException or DivideByZeroException)
            {
                // A malformed or unexpected node: its outputs stay unknown rather than failing the whole inference.
                outputs = [];
            }
            for (int i = 0; i < node.Output.Count; i++)
            {
                string name = node.Output[i];
                if (name.Length == 0)
                {
                    continue;
                }
                InferredType? type = i < outputs.Length ? outputs[i] : null;
                if (declared.TryGetValue(name, out InferredType? known) && (type?.Shape is null || type.ElemType == 0))
                {
                    type = type is null ? known : new InferredType(type.ElemType == 0 ? known.ElemType : type.ElemType, type.Shape ?? known.Shape);
                }
                if (type is not null)
                {
                    _types[name] = type;
                }
            }
        }
    }

    private InferredType? TypeOf(NodeProto node, int input) =>
        input < node.Input.Count && node.Input[input].Length > 0 ? _types.GetValueOrDefault(node.Input[input]) : null;

    private Dim[]? ShapeOf(NodeProto node, int input) => TypeOf(node, input)?.Shape;

    private Dim[]? ValueOf(NodeProto node, int input) =>
        input < node.Input.Count && node.Input[input].Length > 0 ? _values.GetValueOrDefault(node.Input[input]) : null;

    /// <summary>A constant integer input, every element known.</summary>
    private long[]? ConstantOf(NodeProto node, int input) =>
        ValueOf(node, input) is { } v && v.All(d => d.IsKnown) ? [.. v.Select(d => d.Value)] : null;

    private int ElemOf(NodeProto node, int input) => TypeOf(node, input)?.ElemType ?? 0;

    private void SetValue(NodeProto node, Dim[]? value)
    {
        if (value is not null && value.Length <= MaxTrackedValues)
        {
            _values[node.Output[0]] = value;
        }
    }

    private InferredType?[] InferNode(NodeProto node)
    {
        string op = node.OpType;
        int elem0 = ElemOf(node, 0);
        Dim[]? shape0 = ShapeOf(node, 0);
        if (SameShape.Contains(op))
        {
            int elem = Comparisons.Contains(op) ? Bool : elem0;
            if (op == "Identity")
            {
                SetValue(node, ValueOf(node, 0));
            }
            InferredType result = new(elem, shape0);
            return op switch
            {
                "Dropout" => [result, new InferredType(Bool, shape0)],
                // Its optional fourth output is the sum input + skip (+ bias): the input's shape.
                "SkipLayerNormalization" => [result, null, null, result],
                _ => [result],
            };
        }
        if (Broadcasting.Contains(op))
        {
            return [InferBroadcast(node)];
        }
        switch (op)
        {
            case "Cast":
                int to = (int)Attribute(node, "to", 0);
                SetValue(node, IsInteger(to) ? ValueOf(node, 0) : null);
                return [new InferredType(to, shape0)];
            case "CastLike":
                SetValue(node, ValueOf(node, 0));
                return [new InferredType(ElemOf(node, 1), shape0)];
            case "Constant":
                return [InferConstant(node)];
            case "Shape":
                return [InferShape(node, shape0)];
            case "Size":
                SetValue(node, shape0 is not null && shape0.All(d => d.IsKnown) ? [Dim.Of(shape0.Aggregate(1L, (a, d) => a * d.Value))] : null);
                return [new InferredType(Int64, [])];
            case "MatMul":
                return [new InferredType(elem0, InferMatMul(shape0, ShapeOf(node, 1)))];
            case "Gemm":
                return [new InferredType(elem0, InferGemm(node, shape0, ShapeOf(node, 1)))];
            case "Conv":
                return [new InferredType(elem0, InferWindow(node, shape0, ShapeOf(node, 1)))];
            case "MaxPool" or "AveragePool" or "LpPool":
                Dim[]? pooled = InferWindow(node, shape0, null);
                return [new InferredType(elem0, pooled), new InferredType(Int64, pooled)];
            case "GlobalAveragePool" or "GlobalMaxPool" or "GlobalLpPool":
                return [new InferredType(elem0, shape0 is null ? null : [.. shape0.Take(2), .. shape0.Skip(2).Select(_ => Dim.Of(1))])];
            case "Reshape":
                return [new InferredType(elem0, InferReshape(node, shape0))];
            case "Transpose":
                return [new InferredType(elem0, InferTranspose(node, shape0))];
            case "Concat":
                return [InferConcat(node)];
            case "Split":
                return InferSplit(node, shape0);
            case "Slice":
                return [new InferredType(elem0, InferSlice(node, shape0))];
            case "Gather":
                return [InferGather(node, shape0)];
            case "Unsqueeze":
                return [new InferredType(elem0, InferUnsqueeze(node, shape0))];
            case "Squeeze":
                return [new InferredType(elem0, InferSqueeze(node, shape0))];
            case "Flatten":
                return [new InferredType(elem0, InferFlatten(node, shape0))];
            case "ReduceMean" or "ReduceSum" or "ReduceMax" or "ReduceMin" or "ReduceProd" or "ReduceL1" or "ReduceL2"
                or "ReduceLogSum" or "ReduceLogSumExp" or "ReduceSumSquare" or "ArgMax" or "ArgMin":
                return [new InferredType(op.StartsWith("Arg", StringComparison.Ordinal) ? Int64 : elem0, InferReduce(node, shape0))];
            case "Expand":
                return [new InferredType(elem0, ValueOf(node, 1) is { } target && shape0 is not null ? Broadcast([shape0, target]) : null)];
            case "ConstantOfShape":
                AttributeProto? value = node.Attribute.FirstOrDefault(a => a.Name == "value");
                return [new InferredType(value?.T?.DataType ?? Float, ValueOf(node, 0))];
            case "Range":
                return [new InferredType(elem0, [InferRange(node)])];
            case "Pad":
                return [new InferredType(elem0, InferPad(node, shape0))];
            case "Tile":
                return [new InferredType(elem0, InferTile(node, shape0))];
            case "TopK":
                Dim[]? top = InferTopK(node, shape0);
                return [new InferredType(elem0, top), new InferredType(Int64, top)];
            case "Resize" or "Upsample":
                return [new InferredType(elem0, InferResize(node, shape0))];
            case "Attention" or "QAttention":
                // com.microsoft: [B, S, D] in, [B, S, V's hidden size] out, in the bias's type (float for QAttention).
                return [new InferredType(op == "Attention" ? elem0 : ElemOf(node, 2), InferAttention(node, shape0))];
            case "DynamicQuantizeLinear":
                return [new InferredType(Uint8, shape0), new InferredType(Float, []), new InferredType(Uint8, [])];
            case "MatMulInteger":
                return [new InferredType(Int32, InferMatMul(shape0, ShapeOf(node, 1)))];
            case "QuantizeLinear":
                return [new InferredType(node.Input.Count > 2 && node.Input[2].Length > 0 && ElemOf(node, 2) != 0 ? ElemOf(node, 2) : Uint8, shape0)];
            case "DequantizeLinear":
                return [new InferredType(ElemOf(node, 1) != 0 ? ElemOf(node, 1) : Float, shape0)];
            default:
                return [];
        }
    }

    private InferredType InferBroadcast(NodeProto node)
    {
        string op = node.OpType;
        var shapes = new List<Dim[]>();
        for (int i = 0; i < node.Input.Count; i++)
        {
            if (ShapeOf(node, i) is not { } shape)
            {
                shapes.Clear();
                break;
            }
            shapes.Add(shape);
        }
        Dim[]? result = shapes.Count == node.Input.Count && shapes.Count > 0 ? Broadcast(shapes) : null;
        int elem = Comparisons.Contains(op) ? Bool : op == "Where" ? ElemOf(node, 1) : ElemOf(node, 0);
        if (op is "Add" or "Sub" or "Mul" or "Div" && IsInteger(elem) && ValueOf(node, 0) is { } a && ValueOf(node, 1) is { } b && result is { Length: <= 1 })
        {
            SetValue(node, Arithmetic(op, a, b));
        }
        return new InferredType(elem, result);
    }

    private static Dim[]? Arithmetic(string op, Dim[] a, Dim[] b)
    {
        int n = Math.Max(a.Length, b.Length);
        if ((a.Length != n && a.Length != 1) || (b.Length != n && b.Length != 1))
        {
            return null;
        }
        var result = new Dim[n];
        for (int i = 0; i < n; i++)
        {
            Dim x = a[a.Length == 1 ? 0 : i], y = b[b.Length == 1 ? 0 : i];
            result[i] = (x.IsKnown && y.IsKnown, op) switch
            {
                (true, "Add") => Dim.Of(x.Value + y.Value),
                (true, "Sub") => Dim.Of(x.Value - y.Value),
                (true, "Mul") => Dim.Of(x.Value * y.Value),
                (true, "Div") when y.Value != 0 => Dim.Of(x.Value / y.Value),
                (false, "Mul" or "Div") when y.IsKnown && y.Value == 1 => x,
                (false, "Mul") when x.IsKnown && x.Value == 1 => y,
                (false, "Add" or "Sub") when y.IsKnown && y.Value == 0 => x,
                _ => Dim.Unknown,
            };
        }
        return result;
    }

    /// <summary>Numpy-style multidirectional broadcasting.</summary>
    private static Dim[] Broadcast(IReadOnlyList<Dim[]> shapes)
    {
        int rank = shapes.Max(s => s.Length);
        var result = new Dim[rank];
        for (int i = 0; i < rank; i++)
        {
            Dim? current = null;
            foreach (Dim[] shape in shapes)
            {
                int j = i - (rank - shape.Length);
                if (j < 0)
                {
                    continue;
                }
                Dim d = shape[j];
                if (current is not { } c || (c.IsKnown && c.Value == 1))
                {
                    current = d;
                }
                else if (d.IsKnown && d.Value == 1)
                {
                    continue;
                }
                else if (!c.SameAs(d))
                {
                    // A known size other than 1 wins over an unknown or symbolic one (the model is assumed valid).
                    current = c.IsKnown ? c : d.IsKnown ? d : Dim.Unknown;
                }
            }
            result[i] = current ?? Dim.Unknown;
        }
        return result;
    }

    private InferredType? InferConstant(NodeProto node)
    {
        if (node.Attribute.FirstOrDefault() is not { } attribute)
        {
            return null;
        }
        switch (attribute.Name)
        {
            case "value" when attribute.T is not null:
                SetValue(node, ReadIntegers(attribute.T));
                return new InferredType(attribute.T.DataType, [.. attribute.T.Dims.Select(Dim.Of)]);
            case "value_float":
                return new InferredType(Float, []);
            case "value_floats":
                return new InferredType(Float, [Dim.Of(attribute.Floats.Count)]);
            case "value_int":
                SetValue(node, [Dim.Of(attribute.I)]);
                return new InferredType(Int64, []);
            case "value_ints":
                SetValue(node, [.. attribute.Ints.Select(Dim.Of)]);
                return new InferredType(Int64, [Dim.Of(attribute.Ints.Count)]);
            default:
                return null;
        }
    }

    private InferredType InferShape(NodeProto node, Dim[]? shape)
    {
        if (shape is null)
        {
            return new InferredType(Int64, [Dim.Unknown]);
        }
        int rank = shape.Length;
        long start = Attribute(node, "start", 0), end = Attribute(node, "end", rank);
        start = Math.Clamp(start < 0 ? start + rank : start, 0, rank);
        end = Math.Clamp(end < 0 ? end + rank : end, 0, rank);
        Dim[] dims = [.. shape.Skip((int)start).Take((int)Math.Max(0, end - start))];
        SetValue(node, dims);
        return new InferredType(Int64, [Dim.Of(dims.Length)]);
    }

    /// <summary>Attention's output: the input's batch and sequence, and V's hidden size (qkv_hidden_sizes, else a third of the bias or of the weights' columns).</summary>
    private Dim[]? InferAttention(NodeProto node, Dim[]? input)
    {
        if (input is not [Dim batch, Dim sequence, _])
        {
            return null;
        }
        if (node.Attribute.FirstOrDefault(a => a.Name == "qkv_hidden_sizes") is { Ints.Count: 3 } sizes)
        {
            return [batch, sequence, Dim.Of(sizes.Ints[2])];
        }
        Dim columns = ShapeOf(node, 2) is [Dim bias] ? bias : ShapeOf(node, 1) is [_, Dim weight] ? weight : Dim.Unknown;
        return [batch, sequence, columns.IsKnown && columns.Value % 3 == 0 ? Dim.Of(columns.Value / 3) : Dim.Unknown];
    }

    private static Dim[]? InferMatMul(Dim[]? a, Dim[]? b)
    {
        if (a is null || b is null || a.Length == 0 || b.Length == 0)
        {
            return null;
        }
        Dim[] left = a.Length == 1 ? [Dim.Of(1), a[0]] : a;
        Dim[] right = b.Length == 1 ? [b[0], Dim.Of(1)] : b;
        Dim[] batch = Broadcast([left[..^2], right[..^2]]);
        var result = new List<Dim>(batch);
        if (a.Length > 1)
        {
            result.Add(left[^2]);
        }
        if (b.Length > 1)
        {
            result.Add(right[^1]);
        }
        return [.. result];
    }

    private static Dim[]? InferGemm(NodeProto node, Dim[]? a, Dim[]? b)
    {
        if (a is not { Length: 2 } || b is not { Length: 2 })
        {
            return null;
        }
        return [Attribute(node, "transA", 0) != 0 ? a[1] : a[0], Attribute(node, "transB", 0) != 0 ? b[0] : b[1]];
    }

    /// <summary>Conv (with its weight's shape) and the pools: [N, C or M, spatial…].</summary>
    private static Dim[]? InferWindow(NodeProto node, Dim[]? x, Dim[]? w)
    {
        if (x is null || x.Length < 3)
        {
            return null;
        }
        int spatial = x.Length - 2;
        long[]? kernel = Ints(node, "kernel_shape") ?? (w is { } ws && ws.Length == x.Length && ws.Skip(2).All(d => d.IsKnown) ? [.. ws.Skip(2).Select(d => d.Value)] : null);
        Dim channels = w is null ? x[1] : w.Length > 0 ? w[0] : Dim.Unknown;
        var result = new Dim[x.Length];
        result[0] = x[0];
        result[1] = channels;
        if (kernel is null || kernel.Length != spatial)
        {
            for (int i = 2; i < x.Length; i++)
            {
                result[i] = Dim.Unknown;
            }
            return result;
        }
        long[] strides = Ints(node, "strides") ?? [.. Enumerable.Repeat(1L, spatial)];
        long[] dilations = Ints(node, "dilations") ?? [.. Enumerable.Repeat(1L, spatial)];
        long[] pads = Ints(node, "pads") ?? new long[spatial * 2];
        string autoPad = node.Attribute.FirstOrDefault(a => a.Name == "auto_pad")?.S.ToStringUtf8() ?? "NOTSET";
        bool ceil = Attribute(node, "ceil_mode", 0) != 0;
        for (int i = 0; i < spatial; i++)
        {
            Dim input = x[i + 2];
            if (!input.IsKnown)
            {
                result[i + 2] = Dim.Unknown;
                continue;
            }
            long size = input.Value;
            long effective = (dilations[i] * (kernel[i] - 1)) + 1;
            result[i + 2] = autoPad switch
            {
                "SAME_UPPER" or "SAME_LOWER" => Dim.Of((size + strides[i] - 1) / strides[i]),
                "VALID" => Dim.Of(((size - effective) / strides[i]) + 1),
                _ => Dim.Of(Window(size + pads[i] + pads[i + spatial] - effective, strides[i], ceil) + 1),
            };
        }
        return result;
    }

    private static long Window(long span, long stride, bool ceil) => ceil ? (span + stride - 1) / stride : span / stride;

    private Dim[]? InferReshape(NodeProto node, Dim[]? input)
    {
        Dim[]? target = _opset >= 5 ? ValueOf(node, 1) : Ints(node, "shape")?.Select(Dim.Of).ToArray();
        if (target is null)
        {
            return null;
        }
        bool allowZero = Attribute(node, "allowzero", 0) != 0;
        var result = new Dim[target.Length];
        int inferred = -1;
        for (int i = 0; i < target.Length; i++)
        {
            Dim d = target[i];
            if (d.IsKnown && d.Value == 0 && !allowZero)
            {
                result[i] = input is not null && i < input.Length ? input[i] : Dim.Unknown;
            }
            else if (d.IsKnown && d.Value == -1)
            {
                result[i] = Dim.Unknown;
                inferred = inferred == -1 ? i : -2;
            }
            else
            {
                result[i] = d;
            }
        }
        if (inferred >= 0 && input is not null)
        {
            result[inferred] = Quotient(input, [.. result.Where((_, i) => i != inferred)]);
        }
        return result;
    }

    /// <summary>The product of <paramref name="numerator"/> divided by that of <paramref name="denominator"/>, cancelling equal symbols.</summary>
    private static Dim Quotient(Dim[] numerator, Dim[] denominator)
    {
        var top = numerator.Where(d => !d.IsKnown).ToList();
        long topValue = numerator.Where(d => d.IsKnown).Aggregate(1L, (a, d) => a * d.Value);
        long bottomValue = 1;
        foreach (Dim d in denominator)
        {
            if (d.IsKnown)
            {
                bottomValue *= d.Value;
                continue;
            }
            int match = top.FindIndex(t => t.SameAs(d));
            if (match < 0)
            {
                return Dim.Unknown;
            }
            top.RemoveAt(match);
        }
        if (bottomValue == 0 || topValue % bottomValue != 0)
        {
            return Dim.Unknown;
        }
        long ratio = topValue / bottomValue;
        return top.Count switch
        {
            0 => Dim.Of(ratio),
            1 when ratio == 1 => top[0],
            _ => Dim.Unknown,
        };
    }

    private static Dim[]? InferTranspose(NodeProto node, Dim[]? input)
    {
        if (input is null)
        {
            return null;
        }
        long[] perm = Ints(node, "perm") ?? [.. Enumerable.Range(0, input.Length).Reverse().Select(i => (long)i)];
        return perm.Length == input.Length ? [.. perm.Select(p => input[p])] : null;
    }

    private InferredType InferConcat(NodeProto node)
    {
        Dim[]?[] shapes = [.. Enumerable.Range(0, node.Input.Count).Select(i => ShapeOf(node, i))];
        int elem = ElemOf(node, 0);
        if (shapes.Length > 0 && shapes.All(s => s is not null) && shapes.All(s => s!.Length == shapes[0]!.Length) && shapes[0]!.Length > 0)
        {
            int rank = shapes[0]!.Length;
            int axis = (int)Normalize(Attribute(node, "axis", 0), rank);
            var result = new Dim[rank];
            for (int i = 0; i < rank; i++)
            {
                if (i == axis)
                {
                    result[i] = shapes.All(s => s![i].IsKnown) ? Dim.Of(shapes.Sum(s => s![i].Value)) : shapes.Length == 1 ? shapes[0]![i] : Dim.Unknown;
                }
                else
                {
                    // Sizes off the axis agree; take a known one where any input knows it.
                    result[i] = shapes.Select(s => s![i]).FirstOrDefault(d => d.IsKnown, shapes.Select(s => s![i]).FirstOrDefault(d => d.Symbol is not null, Dim.Unknown));
                }
            }
            if (rank == 1)
            {
                var parts = Enumerable.Range(0, node.Input.Count).Select(i => ValueOf(node, i)).ToList();
                if (parts.All(p => p is not null))
                {
                    SetValue(node, [.. parts.SelectMany(p => p!)]);
                }
            }
            return new InferredType(elem, result);
        }
        return new InferredType(elem, shapes.FirstOrDefault(s => s is not null) is { } any ? [.. any.Select(_ => Dim.Unknown)] : null);
    }

    private InferredType?[] InferSplit(NodeProto node, Dim[]? input)
    {
        int count = node.Output.Count;
        int elem = ElemOf(node, 0);
        if (input is null)
        {
            return [.. Enumerable.Repeat<InferredType?>(new InferredType(elem, null), count)];
        }
        int axis = (int)Normalize(Attribute(node, "axis", 0), input.Length);
        long[]? sizes = _opset >= 13 ? ConstantOf(node, 1) : Ints(node, "split");
        Dim whole = input[axis];
        if (sizes is null && whole.IsKnown)
        {
            long piece = (whole.Value + count - 1) / count;
            sizes = [.. Enumerable.Range(0, count).Select(i => Math.Max(0, Math.Min(piece, whole.Value - (i * piece))))];
        }
        var result = new InferredType?[count];
        for (int i = 0; i < count; i++)
        {
            Dim[] shape = [.. input];
            shape[axis] = sizes is not null && sizes.Length == count ? Dim.Of(sizes[i]) : Dim.Unknown;
            result[i] = new InferredType(elem, shape);
        }
        return result;
    }

    private Dim[]? InferSlice(NodeProto node, Dim[]? input)
    {
        if (input is null)
        {
            return null;
        }
        Dim[]? starts, ends;
        long[]? axes, steps;
        if (_opset >= 10)
        {
            starts = ValueOf(node, 1);
            ends = ValueOf(node, 2);
            bool hasAxes = node.Input.Count > 3 && node.Input[3].Length > 0, hasSteps = node.Input.Count > 4 && node.Input[4].Length > 0;
            axes = hasAxes ? ConstantOf(node, 3) : null;
            steps = hasSteps ? ConstantOf(node, 4) : null;
            if ((hasAxes && axes is null) || (hasSteps && steps is null))
            {
                return [.. input.Select(_ => Dim.Unknown)];
            }
        }
        else
        {
            starts = Ints(node, "starts")?.Select(Dim.Of).ToArray();
            ends = Ints(node, "ends")?.Select(Dim.Of).ToArray();
            axes = Ints(node, "axes");
            steps = null;
        }
        if (starts is null || ends is null || starts.Length != ends.Length)
        {
            return [.. input.Select(_ => Dim.Unknown)];
        }
        axes ??= [.. Enumerable.Range(0, starts.Length).Select(i => (long)i)];
        steps ??= [.. Enumerable.Repeat(1L, starts.Length)];
        Dim[] result = [.. input];
        for (int i = 0; i < starts.Length; i++)
        {
            int axis = (int)Normalize(axes[i], input.Length);
            Dim start = starts[i], end = ends[i];
            result[axis] = start.IsKnown && end.IsKnown ? SliceLength(input[axis], start.Value, end.Value, steps[i])
                // x[0:n] with n a symbolic size (position ids cut to the sequence length): taken to lie within the axis.
                : start.IsKnown && start.Value == 0 && steps[i] == 1 && end.Symbol is not null ? end
                : Dim.Unknown;
        }
        if (input.Length == 1 && ValueOf(node, 0) is { } values && result[0].IsKnown && steps[0] > 0 && starts[0].IsKnown)
        {
            long first = Math.Clamp(starts[0].Value < 0 ? starts[0].Value + values.Length : starts[0].Value, 0, values.Length);
            SetValue(node, [.. values.Skip((int)first).Where((_, k) => k % steps[0] == 0).Take((int)result[0].Value)]);
        }
        return result;
    }

    private static Dim SliceLength(Dim dim, long start, long end, long step)
    {
        if (!dim.IsKnown)
        {
            // The whole axis of an unknown size keeps its symbol.
            return start == 0 && step == 1 && end >= int.MaxValue ? dim : Dim.Unknown;
        }
        long n = dim.Value;
        if (step == 0)
        {
            return Dim.Unknown;
        }
        start = start < 0 ? start + n : start;
        end = end < 0 ? end + n : end;
        if (step > 0)
        {
            start = Math.Clamp(start, 0, n);
            end = Math.Clamp(end, 0, n);
            return Dim.Of(Math.Max(0, (end - start + step - 1) / step));
        }
        start = Math.Clamp(start, 0, n - 1);
        end = Math.Clamp(end, -1, n - 1);
        return Dim.Of(Math.Max(0, (start - end + (-step) - 1) / -step));
    }

    private InferredType InferGather(NodeProto node, Dim[]? data)
    {
        int elem = ElemOf(node, 0);
        Dim[]? indices = ShapeOf(node, 1);
        if (data is null || indices is null || data.Length == 0)
        {
            return new InferredType(elem, null);
        }
        int axis = (int)Normalize(Attribute(node, "axis", 0), data.Length);
        Dim[] result = [.. data.Take(axis), .. indices, .. data.Skip(axis + 1)];
        if (data.Length == 1 && ValueOf(node, 0) is { } values && ConstantOf(node, 1) is { } picks)
        {
            Dim[] picked = [.. picks.Select(p => p < 0 ? p + values.Length : p).Select(p => p >= 0 && p < values.Length ? values[p] : Dim.Unknown)];
            SetValue(node, picked);
        }
        return new InferredType(elem, result);
    }

    private long[]? AxesOf(NodeProto node) => _opset >= 13 ? (node.Input.Count > 1 && node.Input[1].Length > 0 ? ConstantOf(node, 1) : null) : Ints(node, "axes");

    private Dim[]? InferUnsqueeze(NodeProto node, Dim[]? input)
    {
        if (input is null || AxesOf(node) is not { } axes)
        {
            return null;
        }
        int rank = input.Length + axes.Length;
        var inserted = new HashSet<long>(axes.Select(a => Normalize(a, rank)));
        var result = new Dim[rank];
        int k = 0;
        for (int i = 0; i < rank; i++)
        {
            result[i] = inserted.Contains(i) ? Dim.Of(1) : input[k++];
        }
        if (input.Length <= 1)
        {
            SetValue(node, ValueOf(node, 0));
        }
        return result;
    }

    private Dim[]? InferSqueeze(NodeProto node, Dim[]? input)
    {
        if (input is null)
        {
            return null;
        }
        long[]? axes = AxesOf(node);
        bool hasAxesInput = _opset >= 13 && node.Input.Count > 1 && node.Input[1].Length > 0;
        if (axes is null && (hasAxesInput || input.Any(d => !d.IsKnown)))
        {
            return null;
        }
        var removed = axes is null
            ? new HashSet<long>(Enumerable.Range(0, input.Length).Where(i => input[i].Value == 1).Select(i => (long)i))
            : new HashSet<long>(axes.Select(a => Normalize(a, input.Length)));
        if (input.Length == 1 && removed.Count == 1)
        {
            SetValue(node, ValueOf(node, 0));
        }
        return [.. input.Where((_, i) => !removed.Contains(i))];
    }

    private static Dim[]? InferFlatten(NodeProto node, Dim[]? input)
    {
        if (input is null)
        {
            return null;
        }
        int axis = (int)Normalize(Attribute(node, "axis", 1), input.Length + 1);
        return [Product(input[..axis]), Product(input[axis..])];
    }

    private static Dim Product(Dim[] dims) =>
        dims.All(d => d.IsKnown) ? Dim.Of(dims.Aggregate(1L, (a, d) => a * d.Value))
        : dims.Count(d => !d.IsKnown) == 1 && dims.Where(d => d.IsKnown).All(d => d.Value == 1) ? dims.First(d => !d.IsKnown) : Dim.Unknown;

    private Dim[]? InferReduce(NodeProto node, Dim[]? input)
    {
        if (input is null)
        {
            return null;
        }
        bool keep = Attribute(node, "keepdims", 1) != 0;
        long[]? axes;
        if (node.OpType is "ArgMax" or "ArgMin")
        {
            axes = [Attribute(node, "axis", 0)];
        }
        else if (node.OpType == "ReduceSum" ? _opset >= 13 : _opset >= 18)
        {
            bool given = node.Input.Count > 1 && node.Input[1].Length > 0;
            axes = given ? ConstantOf(node, 1) : [];
            if (given && axes is null)
            {
                return keep ? [.. input.Select(_ => Dim.Unknown)] : null;
            }
        }
        else
        {
            axes = Ints(node, "axes") ?? [];
        }
        if (axes!.Length == 0)
        {
            if (Attribute(node, "noop_with_empty_axes", 0) != 0)
            {
                return input;
            }
            axes = [.. Enumerable.Range(0, input.Length).Select(i => (long)i)];
        }
        var reduced = new HashSet<long>(axes.Select(a => Normalize(a, input.Length)));
        return keep ? [.. input.Select((d, i) => reduced.Contains(i) ? Dim.Of(1) : d)] : [.. input.Where((_, i) => !reduced.Contains(i))];
    }

    private Dim InferRange(NodeProto node)
    {
        if (ConstantOf(node, 0) is [long start] && ConstantOf(node, 1) is [long limit] && ConstantOf(node, 2) is [long delta] && delta != 0)
        {
            return Dim.Of(Math.Max(0, (long)Math.Ceiling((limit - start) / (double)delta)));
        }
        return Dim.Unknown;
    }

    private static bool IsInteger(int elem) => elem is Int64 or (int)TensorProto.Types.DataType.Int32;

    private static long Normalize(long axis, int rank) => axis < 0 ? axis + rank : axis;

    /// <summary>Pad: each axis grows by its begin and end pads (the pads input from opset 11, optionally over given axes; an attribute before).</summary>
    private Dim[]? InferPad(NodeProto node, Dim[]? shape)
    {
        if (shape is null)
        {
            return null;
        }
        int rank = shape.Length;
        long[]? pads = _opset >= 11 ? ConstantOf(node, 1) : Ints(node, "pads");
        long[] axes = _opset >= 18 && ConstantOf(node, 3) is { } given ? [.. given.Select(a => a < 0 ? a + rank : a)] : [.. Enumerable.Range(0, rank).Select(i => (long)i)];
        if (pads is null || pads.Length != 2 * axes.Length)
        {
            return [.. shape.Select(_ => Dim.Unknown)];
        }
        Dim[] result = [.. shape];
        for (int i = 0; i < axes.Length; i++)
        {
            long grow = pads[i] + pads[i + axes.Length];
            Dim d = shape[axes[i]];
            result[axes[i]] = grow == 0 ? d : d.IsKnown ? Dim.Of(d.Value + grow) : Dim.Unknown;
        }
        return result;
    }

    /// <summary>Tile: each axis times its repeat count.</summary>
    private Dim[]? InferTile(NodeProto node, Dim[]? shape)
    {
        if (shape is null)
        {
            return null;
        }
        if (ConstantOf(node, 1) is not { } repeats || repeats.Length != shape.Length)
        {
            return [.. shape.Select(_ => Dim.Unknown)];
        }
        return [.. shape.Select((d, i) => repeats[i] == 1 ? d : d.IsKnown ? Dim.Of(d.Value * repeats[i]) : Dim.Unknown)];
    }

    /// <summary>TopK: the axis (default −1) becomes K (an input from opset 10, the attribute k before).</summary>
    private Dim[]? InferTopK(NodeProto node, Dim[]? shape)
    {
        if (shape is null || shape.Length == 0)
        {
            return shape;
        }
        long axis = Attribute(node, "axis", -1);
        axis = axis < 0 ? axis + shape.Length : axis;
        long? k = _opset >= 10 ? ConstantOf(node, 1) is [var only] ? only : null : Attribute(node, "k", -1) is var attribute and >= 0 ? attribute : null;
        Dim[] result = [.. shape];
        result[axis] = k is { } known ? Dim.Of(known) : Dim.Unknown;
        return result;
    }

    /// <summary>
    /// Resize (and Upsample): the sizes input when given (over the axes attribute from opset 18), else each axis times its
    /// scale, rounded down; an axis scaled by 1 keeps its symbol.
    /// </summary>
    private Dim[]? InferResize(NodeProto node, Dim[]? shape)
    {
        if (shape is null)
        {
            return null;
        }
        int rank = shape.Length;
        long[] axes = Ints(node, "axes") is { Length: > 0 } given ? [.. given.Select(a => a < 0 ? a + rank : a)] : [.. Enumerable.Range(0, rank).Select(i => (long)i)];
        Dim[] result = [.. shape];
        if (node.Attribute.FirstOrDefault(a => a.Name == "keep_aspect_ratio_policy") is { } policy && policy.S.ToStringUtf8() != "stretch")
        {
            // The sizes are only a bound then: the kept axes shrink to keep the aspect ratio.
            return [.. shape.Select((d, i) => axes.Contains(i) ? Dim.Unknown : d)];
        }
        if (node.OpType == "Resize" && _opset >= 11 && ConstantOf(node, 3) is { } sizes && sizes.Length == axes.Length)
        {
            for (int i = 0; i < axes.Length; i++)
            {
                result[axes[i]] = Dim.Of(sizes[i]);
            }
            return result;
        }
        int scalesInput = node.OpType == "Upsample" || _opset < 11 ? 1 : 2;
        float[]? scales = scalesInput < node.Input.Count && node.Input[scalesInput].Length > 0 && Initializers.FindConstant(_model, node.Input[scalesInput]) is { } tensor
            ? Initializers.ReadFloats(tensor)
            : null;
        if (scales is null || scales.Length != axes.Length)
        {
            return [.. shape.Select(_ => Dim.Unknown)];
        }
        for (int i = 0; i < axes.Length; i++)
        {
            Dim d = shape[axes[i]];
            result[axes[i]] = scales[i] == 1f ? d : d.IsKnown ? Dim.Of((long)Math.Floor(d.Value * (double)scales[i])) : Dim.Unknown;
        }
        return result;
    }

    private static long Attribute(NodeProto node, string name, long fallback) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : fallback;

    private static long[]? Ints(NodeProto node, string name) =>
        node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? [.. a.Ints] : null;

    /// <summary>The elements of a small int64/int32 tensor of rank 0 or 1; null otherwise.</summary>
    private static Dim[]? ReadIntegers(TensorProto tensor)
    {
        if (tensor.Dims.Count > 1 || Initializers.ElementCount(tensor) > MaxTrackedValues || ExternalData.IsExternal(tensor))
        {
            return null;
        }
        long count = Initializers.ElementCount(tensor);
        ReadOnlySpan<byte> raw = tensor.RawData.Span;
        long[]? values = tensor.DataType switch
        {
            Int64 when raw.Length == count * 8 => [.. Enumerable.Range(0, (int)count).Select(i => BinaryPrimitives.ReadInt64LittleEndian(tensor.RawData.Span[(i * 8)..]))],
            Int64 when tensor.Int64Data.Count == count => [.. tensor.Int64Data],
            (int)TensorProto.Types.DataType.Int32 when raw.Length == count * 4 => [.. Enumerable.Range(0, (int)count).Select(i => (long)BinaryPrimitives.ReadInt32LittleEndian(tensor.RawData.Span[(i * 4)..]))],
            (int)TensorProto.Types.DataType.Int32 when tensor.Int32Data.Count == count => [.. tensor.Int32Data.Select(v => (long)v)],
            _ => null,
        };
        return values?.Select(Dim.Of).ToArray();
    }
}
