using Kiln.Optimize.Passes;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

/// <summary>attention-fusion (com.microsoft.Attention) and its dynamic int8 form (QAttention), run in ONNX Runtime.</summary>
public sealed class AttentionFusionTests
{
    private const int Batch = 2, Sequence = 5, Width = 16, Heads = 2, HeadSize = 8;

    private static float[] Values(int count, int seed) => [.. Enumerable.Range(0, count).Select(i => (float)((((i * 37) + (seed * 11)) % 23 / 23.0) - 0.5))];

    private static string[] Ops(OnnxModel model) => [.. model.Proto.Graph.Node.Select(n => n.OpType)];

    private sealed record Shape(bool Mask = true, bool Biased = true, string ScaleOp = "Div", float ScaleValue = 2.828427f, float Filter = -10000f,
        long SoftmaxAxis = -1, bool ProbabilitiesOut = false, bool Sdpa = false);

    /// <summary>Self-attention as BERT exporters write it: Q, K, V projections, head split, Q·Kᵀ scaled, additive mask, Softmax, ·V, heads merged.</summary>
    private static OnnxModel Attention(Shape s)
    {
        var b = new GraphBuilder().Input("x", Batch, Sequence, Width).Output("y", Batch, Sequence, Width)
            .Int64Initializer("split_shape", [4], 0, 0, Heads, HeadSize).Int64Initializer("merge_shape", [3], 0, 0, Heads * HeadSize)
            .Initializer("scale", [], s.ScaleValue);
        if (s.ProbabilitiesOut)
        {
            b.Output("p", Batch, Heads, Sequence, Sequence);
        }
        int seed = 0;
        foreach (string name in (string[])["q", "k", "v"])
        {
            b.Initializer($"w{name}", [Width, Heads * HeadSize], Values(Width * Heads * HeadSize, ++seed));
            if (s.Biased)
            {
                b.Initializer($"b{name}", [Heads * HeadSize], Values(Heads * HeadSize, ++seed));
                b.Node("MatMul", ["x", $"w{name}"], [$"{name}0"]).Node("Add", [$"b{name}", $"{name}0"], [name]);
            }
            else
            {
                b.Node("MatMul", ["x", $"w{name}"], [name]);
            }
            b.Node("Reshape", [name, "split_shape"], [$"{name}4"]);
            if (!s.Sdpa)
            {
                b.Node("Transpose", [$"{name}4"], [$"{name}t"]).Attribute("perm", name == "k" ? [0L, 2, 3, 1] : [0L, 2, 1, 3]);
                continue;
            }
            // As torch exports scaled_dot_product_attention: K transposed twice, Q and K each scaled by √scale.
            b.Node("Transpose", [$"{name}4"], [name == "v" ? "vt" : $"{name}h"]).Attribute("perm", [0L, 2, 1, 3]);
            if (name == "k")
            {
                b.Node("Transpose", ["kh"], ["khT"]).Attribute("perm", [0L, 1, 3, 2]).Node("Mul", ["khT", "root_scale"], ["kt"]);
            }
            else if (name == "q")
            {
                b.Node("Mul", ["root_scale", "qh"], ["qt"]);
            }
        }
        string logits = "scaled";
        if (s.Sdpa)
        {
            b.Initializer("root_scale", [], MathF.Sqrt(s.ScaleValue)).Node("MatMul", ["qt", "kt"], ["scaled"]);
        }
        else
        {
            b.Node("MatMul", ["qt", "kt"], ["scores"]).Node(s.ScaleOp, ["scores", "scale"], ["scaled"]);
        }
        if (s.Mask && s.Sdpa)
        {
            b.Int64Input("mask", Batch, Sequence).Int64Initializer("axis1", [1], 1).Int64Initializer("axis2", [1], 2)
                .Int64Initializer("square", [4], Batch, 1, Sequence, Sequence).Initializer("one", [], 1f).Initializer("filter", [], s.Filter)
                .Node("Unsqueeze", ["mask", "axis1"], ["m1"]).Node("Unsqueeze", ["m1", "axis2"], ["m2"]).Node("Expand", ["m2", "square"], ["m4"])
                .Node("Cast", ["m4"], ["mf"]).Attribute("to", 1L)
                .Node("Sub", ["one", "mf"], ["inverse"]).Node("Cast", ["inverse"], ["masked_out"]).Attribute("to", 9L)
                .Node("Where", ["masked_out", "filter", "inverse"], ["additive"])
                .Node("Add", ["scaled", "additive"], ["masked"]);
            logits = "masked";
        }
        else if (s.Mask)
        {
            b.Int64Input("mask", Batch, Sequence).Int64Initializer("axis1", [1], 1).Int64Initializer("axis2", [1], 2)
                .Initializer("one", [], 1f).Initializer("filter", [], s.Filter)
                .Node("Unsqueeze", ["mask", "axis1"], ["m1"]).Node("Unsqueeze", ["m1", "axis2"], ["m2"])
                .Node("Cast", ["m2"], ["mf"]).Attribute("to", 1L)
                .Node("Sub", ["one", "mf"], ["inverse"]).Node("Mul", ["inverse", "filter"], ["additive"])
                .Node("Add", ["scaled", "additive"], ["masked"]);
            logits = "masked";
        }
        return b.Node("Softmax", [logits], ["p"]).Attribute("axis", s.SoftmaxAxis)
            .Node("MatMul", ["p", "vt"], ["context"]).Node("Transpose", ["context"], ["merged"]).Attribute("perm", [0L, 2, 1, 3])
            .Node("Reshape", ["merged", "merge_shape"], ["y"]).Build();
    }

    /// <summary>x, and a mask that pads the second sequence's last <paramref name="padded"/> tokens.</summary>
    private static Dictionary<string, TensorValue> Inputs(bool mask = true, int padded = 2, int seed = 7)
    {
        var random = new Random(seed);
        var inputs = new Dictionary<string, TensorValue>(StringComparer.Ordinal)
        {
            ["x"] = new(TensorElementType.Float, [Batch, Sequence, Width], [.. Enumerable.Range(0, Batch * Sequence * Width).Select(_ => (random.NextDouble() * 2) - 1)]),
        };
        if (mask)
        {
            inputs["mask"] = new(TensorElementType.Int64, [Batch, Sequence], [.. Enumerable.Range(0, Batch * Sequence).Select(i => i >= (2 * Sequence) - padded ? 0.0 : 1.0)]);
        }
        return inputs;
    }

    private static (OnnxModel Result, PassOutcome Outcome) Fuse(OnnxModel model, Dictionary<string, TensorValue> inputs)
    {
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new AttentionFusion()]).Run(model, inputs);
        return (result, outcomes.Single());
    }

    [Fact]
    public void BertAttention_WithPaddingMask_BecomesOneAttention_WithTheSameOutputs()
    {
        OnnxModel model = Attention(new Shape());
        (OnnxModel result, PassOutcome outcome) = Fuse(model, Inputs());
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        Ops(result).ShouldBe(["Cast", "Attention"]);
        var attention = result.Proto.Graph.Node[1];
        attention.Domain.ShouldBe("com.microsoft");
        attention.Input.ShouldBe(["x", attention.Input[1], attention.Input[2], result.Proto.Graph.Node[0].Output[0]]);
        attention.Attribute.Single(a => a.Name == "num_heads").I.ShouldBe(Heads);
        // 1/√8 and -10000 are Attention's defaults: neither attribute is written.
        attention.Attribute.Select(a => a.Name).ShouldBe(["num_heads"]);
        Kiln.Optimize.Graph.Initializers.Shape(result.Proto.Graph, attention.Input[1]).ShouldBe([Width, 3 * Heads * HeadSize]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldNotContain("wq");

        // Other inputs, more padding: still the original's outputs, masked positions included.
        Dictionary<string, TensorValue> other = Inputs(padded: 4, seed: 11);
        ModelRunner.MaxAbsDifference(ModelRunner.Run(model, other), ModelRunner.Run(result, other)).ShouldBeLessThan(1e-5);
    }

    [Fact]
    public void AnInt32Mask_IsReadAsItIs()
    {
        OnnxModel model = Attention(new Shape());
        model.Proto.Graph.Input.Single(i => i.Name == "mask").Type.TensorType.ElemType = (int)Kiln.Optimize.Onnx.Proto.TensorProto.Types.DataType.Int32;
        Dictionary<string, TensorValue> inputs = Inputs();
        inputs["mask"] = inputs["mask"] with { Type = TensorElementType.Int32 };
        (OnnxModel result, PassOutcome outcome) = Fuse(model, inputs);
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        Ops(result).ShouldBe(["Attention"]);
        result.Proto.Graph.Node[0].Input[3].ShouldBe("mask");
    }

    [Fact]
    public void AScaleOtherThanOneOverRootH_AndAnotherMaskValue_BecomeAttributes()
    {
        OnnxModel model = Attention(new Shape(ScaleOp: "Mul", ScaleValue: 0.5f, Filter: float.MinValue));
        (OnnxModel result, PassOutcome outcome) = Fuse(model, Inputs());
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        var attention = result.Proto.Graph.Node.Single(n => n.OpType == "Attention");
        attention.Attribute.Single(a => a.Name == "scale").F.ShouldBe(0.5f);
        attention.Attribute.Single(a => a.Name == "mask_filter_value").F.ShouldBe(float.MinValue);
    }

    [Fact]
    public void TheScaledDotProductAttentionExport_QAndKScaled_KTransposedTwice_WhereMask_IsFusedToo()
    {
        OnnxModel model = Attention(new Shape(ScaleValue: 0.25f, Filter: float.MinValue, Sdpa: true));
        (OnnxModel result, PassOutcome outcome) = Fuse(model, Inputs());
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        Ops(result).ShouldBe(["Cast", "Attention"]);
        var attention = result.Proto.Graph.Node[1];
        // √0.25 on Q times √0.25 on K.
        attention.Attribute.Single(a => a.Name == "scale").F.ShouldBe(0.25f, 1e-6f);
        attention.Attribute.Single(a => a.Name == "mask_filter_value").F.ShouldBe(float.MinValue);
        Dictionary<string, TensorValue> other = Inputs(padded: 3, seed: 5);
        ModelRunner.MaxAbsDifference(ModelRunner.Run(model, other), ModelRunner.Run(result, other)).ShouldBeLessThan(1e-5);
    }

    [Fact]
    public void WithoutMaskOrBiases_TheAttentionHasZeroBiasesAndNoMask()
    {
        OnnxModel model = Attention(new Shape(Mask: false, Biased: false));
        (OnnxModel result, PassOutcome outcome) = Fuse(model, Inputs(mask: false));
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        Ops(result).ShouldBe(["Attention"]);
        var attention = result.Proto.Graph.Node[0];
        attention.Input.Count.ShouldBe(3);
        Kiln.Optimize.Graph.Initializers.ReadFloats(result.Proto.Graph.Initializer.Single(i => i.Name == attention.Input[2]))!.ShouldAllBe(v => v == 0);
    }

    [Fact]
    public void TheProbabilitiesReadElsewhere_OrASoftmaxOverQueries_AreLeftAlone()
    {
        foreach (Shape shape in (Shape[])[new(ProbabilitiesOut: true), new(SoftmaxAxis: 2)])
        {
            OnnxModel model = Attention(shape);
            int before = model.NodeCount;
            new AttentionFusion().Apply(model.Proto).ShouldBe(0);
            model.NodeCount.ShouldBe(before);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void DynamicInt8_MakesQAttention_AsCloseToFloatAsTheThreeInt8MatMuls(bool perChannel)
    {
        OnnxModel model = Attention(new Shape());
        Dictionary<string, TensorValue> inputs = Inputs();
        (OnnxModel fused, _) = Fuse(model, inputs);
        OnnxModel unfused = model.Clone();
        new DynamicInt8Quantizer { PerChannel = perChannel }.Apply(unfused).Count.ShouldBe(3);
        new DynamicInt8Quantizer { PerChannel = perChannel }.Apply(fused).Count.ShouldBe(1);
        Ops(fused).ShouldBe(["Cast", "DynamicQuantizeLinear", "QAttention"]);
        fused.Proto.Graph.Initializer.ShouldContain(i => i.DataType == (int)Kiln.Optimize.Onnx.Proto.TensorProto.Types.DataType.Int8 && i.Dims.SequenceEqual(new long[] { Width, 3 * Heads * HeadSize }));

        Dictionary<string, TensorValue> expected = ModelRunner.Run(model, inputs);
        Dictionary<string, TensorValue> viaMatMuls = ModelRunner.Run(unfused, inputs), viaQAttention = ModelRunner.Run(fused, inputs);
        // The same activation quantization and the same weight codes: QAttention computes what the three int8 MatMuls do.
        ModelRunner.MaxAbsDifference(viaMatMuls, viaQAttention).ShouldBeLessThan(1e-4);
        ModelRunner.Cosine(expected, viaQAttention).ShouldBeGreaterThan(0.999);
    }

    [Fact]
    public void DynamicInt8_WithAttentionExcluded_KeepsTheFloatAttention()
    {
        OnnxModel model = Attention(new Shape());
        (OnnxModel fused, _) = Fuse(model, Inputs());
        string name = fused.Proto.Graph.Node.Single(n => n.OpType == "Attention").Name;
        new DynamicInt8Quantizer { PerChannel = true, Exclude = new HashSet<string>([name]) }.Apply(fused).ShouldBeEmpty();
        Ops(fused).ShouldBe(["Cast", "Attention"]);
    }

    [Theory]
    [InlineData(QuantizeMode.DynamicInt8, null, "QAttention")]
    [InlineData(QuantizeMode.DynamicInt8, "MatMul", "MatMulInteger")]
    [InlineData(QuantizeMode.None, null, "Attention")]
    [InlineData(QuantizeMode.Float16, null, "Softmax")]
    [InlineData(QuantizeMode.Int4, null, "MatMulNBits")]
    public void ModelOptimizer_FusesAttention_OnlyWhereTheResultCanUseIt(QuantizeMode mode, string? opTypes, string expected)
    {
        string folder = Directory.CreateTempSubdirectory("kiln-attention-").FullName;
        try
        {
            string input = Path.Combine(folder, "attention.onnx"), output = Path.Combine(folder, "out.onnx");
            Attention(new Shape()).Save(input);
            ModelOptimizer.Run(input, output, new OptimizeOptions
            {
                Quantize = mode,
                PerChannel = true,
                OpTypes = opTypes is null ? null : new HashSet<string>(opTypes.Split(','), StringComparer.Ordinal),
                MeasureTime = TimeSpan.FromMilliseconds(20),
            });
            string[] ops = Ops(OnnxModel.Load(output));
            ops.ShouldContain(expected);
            if (expected != "Attention" && expected != "QAttention")
            {
                ops.ShouldNotContain("Attention");
                ops.ShouldNotContain("QAttention");
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void MiniLm_SixLayersFuse_AndAPaddedBatchKeepsItsOutputs_InFloatAndInt8()
    {
        OnnxModel model = MiniLm.Load();
        Dictionary<string, TensorValue> inputs = MiniLm.Inputs(2, 9);
        // The second sentence is three tokens shorter: its last three positions are padding.
        inputs["attention_mask"] = new(TensorElementType.Int64, [2, 9], [.. Enumerable.Range(0, 18).Select(i => i >= 15 ? 0.0 : 1.0)]);
        IGraphPass[] passes = [new ConstantFolding(), new AttentionFusion(), new DeadNodeElimination()];
        (OnnxModel fused, List<PassOutcome> outcomes) = new PassPipeline(passes).Run(model, inputs);
        outcomes.ShouldAllBe(o => o.Kept);
        string[] ops = Ops(fused);
        ops.Count(o => o == "Attention").ShouldBe(6);
        ops.ShouldNotContain("Softmax");
        // Per layer Q, K, V, Q·Kᵀ and ·V go into the Attention; the output projection and the feed-forward pair stay.
        ops.Count(o => o == "MatMul").ShouldBe(48 - 30);

        OnnxModel int8 = fused.Clone();
        new DynamicInt8Quantizer { PerChannel = true }.Apply(int8);
        Ops(int8).Count(o => o == "QAttention").ShouldBe(6);
        // One sequence padded: int8 stays close to float.
        ModelRunner.Cosine(ModelRunner.Run(model, inputs), ModelRunner.Run(int8, inputs)).ShouldBeGreaterThan(0.99);
    }
}
