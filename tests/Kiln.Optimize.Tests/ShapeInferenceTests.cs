using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class ShapeInferenceTests
{
    private static OnnxModel Symbolic(OnnxModel model, string input, params (int Axis, string Name)[] dims)
    {
        TensorShapeProto shape = model.Proto.Graph.Input.Single(i => i.Name == input).Type.TensorType.Shape;
        foreach ((int axis, string name) in dims)
        {
            shape.Dim[axis] = new TensorShapeProto.Types.Dimension { DimParam = name };
        }
        return model;
    }

    private static string Shape(Dictionary<string, InferredType> types, string name) =>
        types[name].Shape is { } shape ? string.Join("x", shape.Select(d => d.ToString())) : "?";

    private static float[] Values(int count) => [.. Enumerable.Range(0, count).Select(i => ((i * 7) % 11 / 11f) - 0.5f)];

    /// <summary>
    /// Runs the model in ONNX Runtime with every node output exposed and checks each inferred shape against the real
    /// one: same rank, known sizes equal, each symbol one size throughout. Returns (values compared, fully known).
    /// </summary>
    private static (int Compared, int FullyKnown) AssertMatchesOnnxRuntime(OnnxModel model, Dictionary<string, TensorValue> inputs)
    {
        Dictionary<string, InferredType> types = ShapeInference.Infer(model.Proto);
        OnnxModel exposed = model.Clone();
        var outputs = new HashSet<string>(exposed.Proto.Graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        foreach (string name in exposed.Proto.Graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0 && outputs.Add(o)))
        {
            exposed.Proto.Graph.Output.Add(new ValueInfoProto { Name = name });
        }
        Dictionary<string, TensorValue> actual = ModelRunner.Run(exposed, inputs);
        var symbols = new Dictionary<string, long>(StringComparer.Ordinal);
        int compared = 0, fullyKnown = 0;
        foreach (string name in model.Proto.Graph.Node.SelectMany(n => n.Output).Where(o => o.Length > 0))
        {
            long[] real = actual[name].Shape;
            InferredType? type = types.GetValueOrDefault(name);
            compared++;
            if (type?.Shape is null)
            {
                continue;
            }
            type.Shape.Length.ShouldBe(real.Length, $"rank of '{name}'");
            for (int i = 0; i < real.Length; i++)
            {
                Dim d = type.Shape[i];
                if (d.IsKnown)
                {
                    d.Value.ShouldBe(real[i], $"dim {i} of '{name}' (inferred {Shape(types, name)}, real {string.Join("x", real)})");
                }
                else if (d.Symbol is not null)
                {
                    if (!symbols.TryAdd(d.Symbol, real[i]))
                    {
                        real[i].ShouldBe(symbols[d.Symbol], $"symbol {d.Symbol} in '{name}'");
                    }
                }
            }
            if (type.Shape.All(d => d.IsKnown || d.Symbol is not null))
            {
                fullyKnown++;
            }
            else if (Environment.GetEnvironmentVariable("KILN_DEBUG_SHAPES") is not null)
            {
                Console.Error.WriteLine($"partial: {name} {Shape(types, name)} real {string.Join("x", real)} from {model.Proto.Graph.Node.First(n => n.Output.Contains(name)).OpType}");
            }
        }
        return (compared, fullyKnown);
    }

    [Fact]
    public void ConvPoolGemm_SizesAndTheSymbolicBatch()
    {
        OnnxModel model = Symbolic(new GraphBuilder().Input("x", 1, 3, 17, 17).Output("y", 1, 10)
            .Initializer("w", [8, 3, 3, 3], Values(8 * 27)).Initializer("scale", [8], Values(8)).Initializer("bias", [8], Values(8))
            .Initializer("mean", [8], Values(8)).Initializer("var", [8], [.. Enumerable.Repeat(1f, 8)])
            .Initializer("fc", [10, 8], Values(80)).Initializer("fb", [10], Values(10))
            .Node("Conv", ["x", "w"], ["c"]).Attribute("pads", [1L, 1, 1, 1]).Attribute("strides", [2L, 2])
            .Node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"])
            .Node("Relu", ["bn"], ["r"])
            .Node("MaxPool", ["r"], ["p"]).Attribute("kernel_shape", [3L, 3]).Attribute("strides", [2L, 2]).Attribute("ceil_mode", 1L)
            .Node("AveragePool", ["p"], ["a"]).Attribute("kernel_shape", [2L, 2])
            .Node("GlobalAveragePool", ["a"], ["g"])
            .Node("Flatten", ["g"], ["f"])
            .Node("Gemm", ["f", "fc", "fb"], ["y"]).Attribute("transB", 1L).Build(), "x", (0, "N"));

        Dictionary<string, InferredType> types = ShapeInference.Infer(model.Proto);

        Shape(types, "c").ShouldBe("Nx8x9x9");
        Shape(types, "bn").ShouldBe("Nx8x9x9");
        Shape(types, "p").ShouldBe("Nx8x4x4");
        Shape(types, "a").ShouldBe("Nx8x3x3");
        Shape(types, "g").ShouldBe("Nx8x1x1");
        Shape(types, "f").ShouldBe("Nx8");
        Shape(types, "y").ShouldBe("Nx10");
        types["y"].ElemType.ShouldBe((int)TensorProto.Types.DataType.Float);
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [2, 3, 17, 17], new double[2 * 3 * 17 * 17]) };
        AssertMatchesOnnxRuntime(model, inputs).ShouldBe((8, 8));
    }

    [Fact]
    public void ShapeComputedReshape_KeepsSymbols_AndMinusOneAndZeroResolve()
    {
        // x[batch, seq, 16] → heads [batch, seq, 4, 4] through Shape/Gather/Unsqueeze/Concat, then back with [0, 0, -1].
        OnnxModel model = Symbolic(new GraphBuilder().Input("x", 1, 1, 16).Output("y", 1, 1, 16)
            .Int64Initializer("i0", [], 0).Int64Initializer("i1", [], 1).Int64Initializer("axes0", [1], 0)
            .Int64Initializer("heads", [2], 4, 4).Int64Initializer("back", [3], 0, 0, -1)
            .Node("Shape", ["x"], ["s"]).Node("Gather", ["s", "i0"], ["b"]).Node("Gather", ["s", "i1"], ["n"])
            .Node("Unsqueeze", ["b", "axes0"], ["bu"]).Node("Unsqueeze", ["n", "axes0"], ["nu"])
            .Node("Concat", ["bu", "nu", "heads"], ["target"]).Attribute("axis", 0L)
            .Node("Reshape", ["x", "target"], ["h"])
            .Node("Transpose", ["h"], ["t"]).Attribute("perm", [0L, 2, 1, 3])
            .Node("Transpose", ["h"], ["tk"]).Attribute("perm", [0L, 2, 3, 1])
            .Node("MatMul", ["t", "tk"], ["scores"])
            .Node("Softmax", ["scores"], ["probs"]).Attribute("axis", -1L)
            .Node("MatMul", ["probs", "t"], ["ctx"])
            .Node("Transpose", ["ctx"], ["ct"]).Attribute("perm", [0L, 2, 1, 3])
            .Node("Reshape", ["ct", "back"], ["y"]).Build(), "x", (0, "batch"), (1, "seq"));

        Dictionary<string, InferredType> types = ShapeInference.Infer(model.Proto);

        Shape(types, "s").ShouldBe("3");
        types["s"].ElemType.ShouldBe((int)TensorProto.Types.DataType.Int64);
        Shape(types, "b").ShouldBe("");
        Shape(types, "target").ShouldBe("4");
        Shape(types, "h").ShouldBe("batchxseqx4x4");
        Shape(types, "scores").ShouldBe("batchx4xseqxseq");
        Shape(types, "ctx").ShouldBe("batchx4xseqx4");
        Shape(types, "y").ShouldBe("batchxseqx16");
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [2, 5, 16], Array.ConvertAll(Values(160), v => (double)v)) };
        AssertMatchesOnnxRuntime(model, inputs).ShouldBe((14, 14));
    }

    [Fact]
    public void SplitSliceSqueezeExpandWhereReduceCast()
    {
        OnnxModel model = Symbolic(new GraphBuilder().Input("x", 1, 6, 8).Output("y", 1, 6, 1)
            .Int64Initializer("sizes", [2], 2, 6).Int64Initializer("st", [1], 1).Int64Initializer("en", [1], long.MaxValue)
            .Int64Initializer("ax", [1], 1).Int64Initializer("sq", [1], 0).Int64Initializer("ex", [3], 3, 1, 1)
            .Initializer("zero", [], 0f)
            .Node("Split", ["x", "sizes"], ["a", "b"]).Attribute("axis", 2L)
            .Node("Slice", ["b", "st", "en", "ax"], ["bs"])
            .Node("ReduceMean", ["bs"], ["m"]).Attribute("axes", [-1L])
            .Node("Concat", ["a", "b"], ["ab"]).Attribute("axis", -1L)
            .Node("Greater", ["ab", "zero"], ["pos"])
            .Node("Where", ["pos", "ab", "zero"], ["w"])
            .Node("Cast", ["w"], ["wi"]).Attribute("to", (long)TensorProto.Types.DataType.Int32)
            .Node("Slice", ["x", "sq", "st", "sq"], ["first"])
            .Node("Squeeze", ["first", "sq"], ["fs"])
            .Node("Expand", ["fs", "ex"], ["e"])
            .Node("Unsqueeze", ["m", "sq"], ["mu"])
            .Node("Identity", ["m"], ["y"]).Build(), "x", (0, "B"));

        Dictionary<string, InferredType> types = ShapeInference.Infer(model.Proto);

        Shape(types, "a").ShouldBe("Bx6x2");
        Shape(types, "b").ShouldBe("Bx6x6");
        Shape(types, "bs").ShouldBe("Bx5x6");
        Shape(types, "m").ShouldBe("Bx5x1");
        Shape(types, "ab").ShouldBe("Bx6x8");
        types["pos"].ElemType.ShouldBe((int)TensorProto.Types.DataType.Bool);
        Shape(types, "w").ShouldBe("Bx6x8");
        types["wi"].ElemType.ShouldBe((int)TensorProto.Types.DataType.Int32);
        // [0:1] of a symbolic size is 1 only when that size is not 0: unknown.
        Shape(types, "first").ShouldBe("?x6x8");
        Shape(types, "fs").ShouldBe("6x8");
        Shape(types, "e").ShouldBe("3x6x8");
        Shape(types, "mu").ShouldBe("1xBx5x1");
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [3, 6, 8], Array.ConvertAll(Values(144), v => (double)v)) };
        AssertMatchesOnnxRuntime(model, inputs).ShouldBe((13, 12));
    }

    [Fact]
    public void PadTileTopKResize()
    {
        OnnxModel model = Symbolic(new GraphBuilder().Input("x", 1, 3, 4, 6).Output("y", 1, 3, 8, 12)
            .Int64Initializer("pads", [8], 0, 0, 1, 2, 0, 0, 3, 0).Int64Initializer("reps", [4], 1, 2, 1, 3).Int64Initializer("k", [1], 2)
            .Int64Initializer("sizes", [4], 1, 3, 8, 12).Initializer("scales", [4], 1f, 1f, 2.5f, 0.5f)
            .Node("Pad", ["x", "pads"], ["p"])
            .Node("Tile", ["x", "reps"], ["t"])
            .Node("TopK", ["x", "k"], ["tv", "ti"]).Attribute("axis", 2L)
            .Node("Resize", ["x", "", "scales"], ["rs"])
            .Node("Resize", ["x", "", "", "sizes"], ["y"]).Build(), "x", (0, "B"));

        Dictionary<string, InferredType> types = ShapeInference.Infer(model.Proto);

        Shape(types, "p").ShouldBe("Bx3x8x8");
        Shape(types, "t").ShouldBe("Bx6x4x18");
        Shape(types, "tv").ShouldBe("Bx3x2x6");
        Shape(types, "ti").ShouldBe("Bx3x2x6");
        types["ti"].ElemType.ShouldBe((int)TensorProto.Types.DataType.Int64);
        Shape(types, "rs").ShouldBe("Bx3x10x3");
        Shape(types, "y").ShouldBe("1x3x8x12");
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [1, 3, 4, 6], Array.ConvertAll(Values(72), v => (double)v)) };
        AssertMatchesOnnxRuntime(model, inputs).ShouldBe((6, 6));
    }

    [Fact]
    public void Apply_WritesValueInfo_ThatOnnxRuntimeAccepts()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 3).Output("y", 2, 3)
            .Node("Relu", ["x"], ["r"]).Node("Sigmoid", ["r"], ["s"]).Node("Mul", ["r", "s"], ["y"]).Build();
        ShapeInference.Apply(model.Proto).ShouldBe(2);
        model.Proto.Graph.ValueInfo.Select(v => v.Name).ShouldBe(["r", "s"], ignoreOrder: true);
        model.Proto.Graph.ValueInfo.ShouldAllBe(v => v.Type.TensorType.Shape.Dim.Select(d => d.DimValue).SequenceEqual(new long[] { 2, 3 }));
        ModelRunner.Run(model, ModelRunner.SampleInputs(model))["y"].Shape.ShouldBe([2, 3]);
    }

    [Fact]
    public void ResNet18_InferredShapes_MatchOnnxRuntime()
    {
        OnnxModel model = OnnxModel.Load(Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx"));
        // Opset 8: Conv, BatchNormalization, Relu, MaxPool, Add, AveragePool; every one of the 74 values fully known.
        AssertMatchesOnnxRuntime(model, ModelRunner.SampleInputs(model)).ShouldBe((74, 74));
    }

    [Fact]
    public void MiniLm_InferredShapes_MatchOnnxRuntime()
    {
        OnnxModel model = MiniLm.Load();
        (int compared, int fullyKnown) = AssertMatchesOnnxRuntime(model, MiniLm.Inputs(batch: 2, sequence: 7));
        compared.ShouldBe(model.NodeCount);
        // Every value's rank is known; the share with every dimension known or symbolic:
        fullyKnown.ShouldBe(compared, $"{compared - fullyKnown} values have an unknown dimension");
    }

    [Fact]
    public void MiniLm_AfterAttentionFusionAndInt8_InferredShapes_MatchOnnxRuntime_ThroughAttentionAndQAttention()
    {
        OnnxModel model = MiniLm.Load();
        new Kiln.Optimize.Passes.ConstantFolding().Apply(model.Proto);
        new Kiln.Optimize.Passes.AttentionFusion().Apply(model.Proto).ShouldBeGreaterThan(0);
        OnnxModel int8 = model.Clone();
        new Kiln.Optimize.Quantization.DynamicInt8Quantizer { PerChannel = true }.Apply(int8);
        foreach ((OnnxModel m, string op) in (IEnumerable<(OnnxModel, string)>)[(model, "Attention"), (int8, "QAttention")])
        {
            m.Proto.Graph.Node.Count(n => n.OpType == op).ShouldBe(6);
            (int compared, int fullyKnown) = AssertMatchesOnnxRuntime(m, MiniLm.Inputs(batch: 2, sequence: 7));
            // Everything after the first attention depends on its output's shape.
            compared.ShouldBe(m.Proto.Graph.Node.SelectMany(n => n.Output).Count(o => o.Length > 0));
            fullyKnown.ShouldBe(compared, $"{compared - fullyKnown} values have an unknown dimension after {op}");
        }
    }

    [Fact]
    public void MiniLm_AfterDynamicInt8_InferredShapes_MatchOnnxRuntime_ThroughTheQuantizedOps()
    {
        OnnxModel model = MiniLm.Load();
        new Kiln.Optimize.Quantization.DynamicInt8Quantizer { PerChannel = true }.Apply(model);
        model.Proto.Graph.Node.ShouldContain(n => n.OpType == "DynamicQuantizeLinear");
        (int compared, int fullyKnown) = AssertMatchesOnnxRuntime(model, MiniLm.Inputs(batch: 2, sequence: 7));
        compared.ShouldBe(model.Proto.Graph.Node.SelectMany(n => n.Output).Count(o => o.Length > 0));
        fullyKnown.ShouldBe(compared, $"{compared - fullyKnown} values have an unknown dimension");
    }
}
