using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Passes;

namespace Kiln.Optimize.Tests;

/// <summary>gelu-fusion, skip-layernorm-fusion, sibling-matmul-merge and concat-split-elimination, each checked by the pipeline in ONNX Runtime.</summary>
public sealed class ContribFusionTests
{
    private static float[] Values(int count, double scale = 1) => [.. Enumerable.Range(0, count).Select(i => (float)((((i * 37) % 23) / 23.0) - 0.5) * (float)scale)];

    private static string[] Ops(OnnxModel model) => [.. model.Proto.Graph.Node.Select(n => n.OpType)];

    private static void AssertKept(PassOutcome outcome, int changes)
    {
        outcome.Kept.ShouldBeTrue(outcome.Reason);
        outcome.Changes.ShouldBe(changes);
    }

    /// <summary>h = x + b (when biased), then ½·h·(1 + erf(h/√2)) in the grouping exporters write.</summary>
    private static OnnxModel ErfGelu(bool biased, bool halfFirst = false)
    {
        var builder = new GraphBuilder().Input("x", 2, 3, 8).Output("y", 2, 3, 8)
            .Initializer("b", [8], Values(8)).Initializer("sqrt2", [], 1.4142135f).Initializer("one", [], 1f).Initializer("half", [], 0.5f);
        string h = "x";
        if (biased)
        {
            builder.Node("Add", ["b", "x"], ["h"]);
            h = "h";
        }
        builder.Node("Div", [h, "sqrt2"], ["d"]).Node("Erf", ["d"], ["e"]).Node("Add", ["e", "one"], ["a"]);
        return halfFirst
            ? builder.Node("Mul", [h, "half"], ["hh"]).Node("Mul", ["hh", "a"], ["y"]).Build()
            : builder.Node("Mul", [h, "a"], ["m"]).Node("Mul", ["m", "half"], ["y"]).Build();
    }

    [Fact]
    public void ErfGelu_AfterABiasAdd_BecomesBiasGelu()
    {
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new GeluFusion()]).Run(ErfGelu(biased: true));
        AssertKept(outcomes.Single(), changes: 7);
        NodeProto fused = result.Proto.Graph.Node.Single();
        (fused.OpType, fused.Domain).ShouldBe(("BiasGelu", "com.microsoft"));
        fused.Input.ShouldBe(["x", "b"]);
        fused.Output.ShouldBe(["y"]);
        result.Proto.OpsetImport.ShouldContain(o => o.Domain == "com.microsoft");
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["b"]);
    }

    [Fact]
    public void ErfGelu_WithHalfTimesXFirst_BecomesGelu()
    {
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new GeluFusion()]).Run(ErfGelu(biased: false, halfFirst: true));
        AssertKept(outcomes.Single(), changes: 6);
        Ops(result).ShouldBe(["Gelu"]);
        result.Proto.Graph.Node[0].Input.ShouldBe(["x"]);
    }

    [Fact]
    public void ErfGelu_WithAReadIntermediate_OrAnotherDivisor_IsLeftAlone()
    {
        OnnxModel exposed = ErfGelu(biased: false);
        exposed.Proto.Graph.Output.Add(new ValueInfoProto { Name = "e" });
        OnnxModel halved = ErfGelu(biased: false);
        halved.Proto.Graph.Initializer.Single(i => i.Name == "sqrt2").RawData = Google.Protobuf.ByteString.CopyFrom(BitConverter.GetBytes(2f));
        foreach (OnnxModel model in new[] { exposed, halved })
        {
            (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new GeluFusion()]).Run(model);
            outcomes.Single().Changes.ShouldBe(0);
            Ops(result).ShouldNotContain("Gelu");
        }
    }

    [Fact]
    public void TanhGelu_BecomesFastGelu_WithItsBias()
    {
        OnnxModel model = new GraphBuilder().Input("x", 4, 8).Output("y", 4, 8)
            .Initializer("b", [8], Values(8)).Initializer("three", [], 3f).Initializer("c", [], 0.044715f)
            .Initializer("k", [], 0.7978846f).Initializer("one", [], 1f).Initializer("half", [], 0.5f)
            .Node("Add", ["x", "b"], ["h"])
            .Node("Pow", ["h", "three"], ["cube"]).Node("Mul", ["c", "cube"], ["cc"]).Node("Add", ["h", "cc"], ["inner"])
            .Node("Mul", ["inner", "k"], ["scaled"]).Node("Tanh", ["scaled"], ["t"]).Node("Add", ["one", "t"], ["a"])
            .Node("Mul", ["a", "half"], ["ah"]).Node("Mul", ["h", "ah"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new GeluFusion()]).Run(model);
        AssertKept(outcomes.Single(), changes: 10);
        NodeProto fused = result.Proto.Graph.Node.Single();
        fused.OpType.ShouldBe("FastGelu");
        fused.Input.ShouldBe(["x", "b"]);
    }

    [Theory]
    [InlineData(1f)]
    [InlineData(1.702f)]
    public void XTimesSigmoid_BecomesQuickGelu(float alpha)
    {
        var builder = new GraphBuilder().Input("x", 3, 5).Output("y", 3, 5).Initializer("alpha", [], alpha);
        OnnxModel model = alpha == 1f
            ? builder.Node("Sigmoid", ["x"], ["s"]).Node("Mul", ["x", "s"], ["y"]).Build()
            : builder.Node("Mul", ["x", "alpha"], ["ax"]).Node("Sigmoid", ["ax"], ["s"]).Node("Mul", ["s", "x"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new GeluFusion()]).Run(model);
        outcomes.Single().Kept.ShouldBeTrue(outcomes.Single().Reason);
        NodeProto fused = result.Proto.Graph.Node.Single();
        fused.OpType.ShouldBe("QuickGelu");
        fused.Attribute.Single(a => a.Name == "alpha").F.ShouldBe(alpha);
    }

    /// <summary>s = a + b (a optionally h + bias), then the decomposed layer normalization of s over the last axis.</summary>
    private static GraphBuilder DecomposedNorm(long[] bShape, bool biased)
    {
        var builder = new GraphBuilder().Input("h", 2, 3, 8).Input("b", bShape).Output("y", 2, 3, 8)
            .Initializer("bias", [8], Values(8)).Initializer("gamma", [8], Values(8, 2)).Initializer("beta", [8], Values(8, 0.3))
            .Initializer("two", [], 2f).Initializer("eps", [], 1e-5f);
        builder = biased ? builder.Node("Add", ["h", "bias"], ["a"]).Node("Add", ["a", "b"], ["s"]) : builder.Node("Add", ["h", "b"], ["s"]);
        return builder
            .Node("ReduceMean", ["s"], ["mean"]).Attribute("axes", [-1L])
            .Node("Sub", ["s", "mean"], ["d"]).Node("Pow", ["d", "two"], ["sq"])
            .Node("ReduceMean", ["sq"], ["var"]).Attribute("axes", [-1L])
            .Node("Add", ["var", "eps"], ["ve"]).Node("Sqrt", ["ve"], ["std"]).Node("Div", ["d", "std"], ["n"])
            .Node("Mul", ["n", "gamma"], ["g"]).Node("Add", ["g", "beta"], ["y"]);
    }

    [Fact]
    public void ResidualAddThenDecomposedLayerNorm_BecomesSkipLayerNormalization_WithTheBias()
    {
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SkipLayerNormFusion()]).Run(DecomposedNorm([2, 3, 8], biased: true).Build());
        AssertKept(outcomes.Single(), changes: 12);
        NodeProto fused = result.Proto.Graph.Node.Single();
        (fused.OpType, fused.Domain).ShouldBe(("SkipLayerNormalization", "com.microsoft"));
        fused.Input.ShouldBe(["h", "b", "gamma", "beta", "bias"]);
        fused.Output.ShouldBe(["y"]);
        fused.Attribute.Single(a => a.Name == "epsilon").F.ShouldBe(1e-5f);
    }

    [Fact]
    public void WithoutBiasFolding_TheBiasAddStays()
    {
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SkipLayerNormFusion(foldBias: false)]).Run(DecomposedNorm([2, 3, 8], biased: true).Build());
        AssertKept(outcomes.Single(), changes: 11);
        Ops(result).ShouldBe(["Add", "SkipLayerNormalization"]);
        result.Proto.Graph.Node[1].Input.ShouldBe(["a", "b", "gamma", "beta"]);
    }

    [Fact]
    public void AddThenLayerNormalization_WhoseSumIsReadAgain_KeepsTheSumAsTheFourthOutput()
    {
        OnnxModel model = new GraphBuilder().Input("a", 2, 3, 8).Input("b", 2, 3, 8).Output("y", 2, 3, 8)
            .Initializer("gamma", [8], Values(8, 2)).Initializer("beta", [8], Values(8, 0.3))
            .Node("Add", ["a", "b"], ["s"]).Node("LayerNormalization", ["s", "gamma", "beta"], ["n"]).Attribute("axis", -1L)
            .Node("Add", ["n", "s"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SkipLayerNormFusion()]).Run(model);
        AssertKept(outcomes.Single(), changes: 3);
        Ops(result).ShouldBe(["SkipLayerNormalization", "Add"]);
        result.Proto.Graph.Node[0].Output.ShouldBe(["n", "", "", "s"]);
    }

    [Fact]
    public void DecomposedLayerNorm_WithABroadcastAdd_BecomesLayerNormalizationOnly()
    {
        // b is [1, 3, 8]: SkipLayerNormalization wants two inputs of one shape, so only the normalization is fused (opset 17).
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SkipLayerNormFusion()]).Run(DecomposedNorm([1, 3, 8], biased: false).Build());
        AssertKept(outcomes.Single(), changes: 10);
        Ops(result).ShouldBe(["Add", "LayerNormalization"]);
        result.Proto.Graph.Node[1].Input.ShouldBe(["s", "gamma", "beta"]);
    }

    [Fact]
    public void SiblingMatMuls_WithBiases_BecomeOneMatMulAddAndSplit()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 5, 8).Output("q", 2, 5, 4).Output("k", 2, 5, 6).Output("v", 2, 5, 4).Output("o", 2, 5, 3)
            .Initializer("wq", [8, 4], Values(32)).Initializer("wk", [8, 6], Values(48, 0.7)).Initializer("wv", [8, 4], Values(32, 1.3))
            .Initializer("bq", [4], Values(4)).Initializer("bk", [6], Values(6, 2)).Initializer("bv", [4], Values(4, 3))
            .Initializer("wo", [5, 3], Values(15))
            .Node("MatMul", ["x", "wq"], ["mq"]).Node("Add", ["mq", "bq"], ["q"])
            .Node("MatMul", ["x", "wk"], ["mk"]).Node("Add", ["bk", "mk"], ["k"])
            .Node("MatMul", ["x", "wv"], ["mv"]).Node("Add", ["mv", "bv"], ["v"])
            .Node("Transpose", ["x"], ["xt"]).Attribute("perm", [0L, 2, 1])
            .Node("MatMul", ["xt", "wo"], ["o8"]).Node("ReduceMean", ["o8"], ["o"]).Attribute("axes", [1L]).Attribute("keepdims", 1L)
            .Build();
        model.Proto.Graph.Output.Single(o => o.Name == "o").Type.TensorType.Shape.Dim[1].DimValue = 1;
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SiblingMatMulMerge()]).Run(model);
        AssertKept(outcomes.Single(), changes: 9);
        Ops(result).ShouldBe(["MatMul", "Add", "Split", "Transpose", "MatMul", "ReduceMean"]);
        NodeProto split = result.Proto.Graph.Node[2];
        split.Output.ShouldBe(["q", "k", "v"]);
        split.Attribute.Single(a => a.Name == "axis").I.ShouldBe(2);
        result.Proto.Graph.Initializer.Single(i => i.Name == split.Input[1]).Int64Data.ShouldBe([4L, 6, 4]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldNotContain("wq");
        result.Proto.Graph.Initializer.Single(i => i.Name == result.Proto.Graph.Node[0].Input[1]).Dims.ShouldBe([8L, 14]);
    }

    [Fact]
    public void SiblingMatMuls_OneWithoutBias_MergeTheMatMulsOnly()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3, 8).Output("q", 3, 4).Output("k", 3, 4)
            .Initializer("wq", [8, 4], Values(32)).Initializer("wk", [8, 4], Values(32, 0.5)).Initializer("bq", [4], Values(4))
            .Node("MatMul", ["x", "wq"], ["mq"]).Node("Add", ["mq", "bq"], ["q"])
            .Node("MatMul", ["x", "wk"], ["mk"]).Node("Relu", ["mk"], ["k"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SiblingMatMulMerge()]).Run(model);
        AssertKept(outcomes.Single(), changes: 4);
        Ops(result).ShouldBe(["MatMul", "Split", "Add", "Relu"]);
        result.Proto.Graph.Node[1].Output.ShouldBe(["mq", "mk"]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SiblingGemms_BecomeOneGemmAndSplit(bool transB)
    {
        long[] Dims(long k, long n) => transB ? [n, k] : [k, n];
        OnnxModel model = new GraphBuilder().Input("x", 3, 8).Output("p", 3, 4).Output("q", 3, 5).Output("r", 3, 4)
            .Initializer("w1", Dims(8, 4), Values(32)).Initializer("w2", Dims(8, 5), Values(40, 0.6)).Initializer("w3", Dims(6, 4), Values(24))
            .Initializer("c1", [4], Values(4)).Initializer("c2", [5], Values(5, 2))
            .Node("Gemm", ["x", "w1", "c1"], ["p"]).Attribute("transB", transB ? 1L : 0L)
            .Node("Gemm", ["x", "w2", "c2"], ["q"]).Attribute("transB", transB ? 1L : 0L)
            .Node("Slice", ["x", "zero", "six", "one"], ["x6"])
            .Node("Gemm", ["x6", "w3"], ["r"]).Attribute("transB", transB ? 1L : 0L)
            .Int64Initializer("zero", [1], 0).Int64Initializer("six", [1], 6).Int64Initializer("one", [1], 1).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SiblingMatMulMerge()]).Run(model);
        AssertKept(outcomes.Single(), changes: 4);
        Ops(result).ShouldBe(["Gemm", "Split", "Slice", "Gemm"]);
        NodeProto merged = result.Proto.Graph.Node[0];
        result.Proto.Graph.Initializer.Single(i => i.Name == merged.Input[1]).Dims.ShouldBe(Dims(8, 9));
        result.Proto.Graph.Initializer.Single(i => i.Name == merged.Input[2]).Dims.ShouldBe([9L]);
        result.Proto.Graph.Node[1].Output.ShouldBe(["p", "q"]);
    }

    [Fact]
    public void MatMuls_OfDifferentK_OrAComputedWeight_AreNotMerged()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3, 8).Input("w", 8, 4).Output("p", 3, 4).Output("r", 3, 4)
            .Initializer("wq", [8, 4], Values(32))
            .Node("MatMul", ["x", "wq"], ["p"]).Node("MatMul", ["x", "w"], ["r"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new SiblingMatMulMerge()]).Run(model);
        outcomes.Single().Changes.ShouldBe(0);
        Ops(result).ShouldBe(["MatMul", "MatMul"]);
    }

    [Fact]
    public void SplitThenConcatInOrder_IsTheInput()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 6).Output("y", 2, 6).Int64Initializer("sizes", [2], 2, 4)
            .Node("Split", ["x", "sizes"], ["a", "b"]).Attribute("axis", 1L)
            .Node("Concat", ["a", "b"], ["c"]).Attribute("axis", -1L).Node("Relu", ["c"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConcatSplitElimination()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        Ops(result).ShouldBe(["Relu"]);
        result.Proto.Graph.Node[0].Input.ShouldBe(["x"]);
    }

    [Fact]
    public void SplitThenConcatReordered_OrOnAnotherAxis_Stays()
    {
        OnnxModel swapped = new GraphBuilder().Input("x", 2, 6).Output("y", 2, 6).Int64Initializer("sizes", [2], 3, 3)
            .Node("Split", ["x", "sizes"], ["a", "b"]).Attribute("axis", 1L)
            .Node("Concat", ["b", "a"], ["c"]).Attribute("axis", 1L).Node("Relu", ["c"], ["y"]).Build();
        OnnxModel otherAxis = new GraphBuilder().Input("x", 2, 6).Output("y", 4, 3).Int64Initializer("sizes", [2], 3, 3)
            .Node("Split", ["x", "sizes"], ["a", "b"]).Attribute("axis", 1L)
            .Node("Concat", ["a", "b"], ["c"]).Attribute("axis", 0L).Node("Relu", ["c"], ["y"]).Build();
        foreach (OnnxModel model in new[] { swapped, otherAxis })
        {
            (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConcatSplitElimination()]).Run(model);
            outcomes.Single().Changes.ShouldBe(0);
            Ops(result).ShouldBe(["Split", "Concat", "Relu"]);
        }
    }

    [Fact]
    public void ConcatThenSplitAtTheSameBoundaries_ReadsThePiecesDirectly()
    {
        OnnxModel model = new GraphBuilder().Input("a", 2, 2).Input("b", 2, 5).Output("y", 2, 2).Output("z", 2, 5)
            .Int64Initializer("sizes", [2], 2, 5)
            .Node("Concat", ["a", "b"], ["c"]).Attribute("axis", 1L)
            .Node("Split", ["c", "sizes"], ["p", "q"]).Attribute("axis", 1L)
            .Node("Relu", ["p"], ["y"]).Node("Neg", ["q"], ["z"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConcatSplitElimination()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        Ops(result).ShouldBe(["Relu", "Neg"]);
        result.Proto.Graph.Node.Select(n => n.Input[0]).ShouldBe(["a", "b"]);

        OnnxModel shifted = new GraphBuilder().Input("a", 2, 2).Input("b", 2, 5).Output("y", 2, 3).Output("z", 2, 4)
            .Int64Initializer("sizes", [2], 3, 4)
            .Node("Concat", ["a", "b"], ["c"]).Attribute("axis", 1L)
            .Node("Split", ["c", "sizes"], ["p", "q"]).Attribute("axis", 1L)
            .Node("Relu", ["p"], ["y"]).Node("Neg", ["q"], ["z"]).Build();
        new PassPipeline([new ConcatSplitElimination()]).Run(shifted).Outcomes.Single().Changes.ShouldBe(0);
    }

    [Fact]
    public void ConcatOfOne_AndAWholeAxisSlice_Go_APartialSliceStays()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 6).Output("y", 2, 6).Output("z", 2, 5)
            .Int64Initializer("zero", [1], 0).Int64Initializer("big", [1], long.MaxValue).Int64Initializer("one", [1], 1).Int64Initializer("six", [1], 6)
            .Node("Concat", ["x"], ["c"]).Attribute("axis", 0L)
            .Node("Slice", ["c", "zero", "big", "one"], ["s"])
            .Node("Slice", ["s", "zero", "six", "zero"], ["s2"])
            .Node("Relu", ["s2"], ["y"])
            .Node("Slice", ["s2", "one", "big", "one"], ["z"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConcatSplitElimination()]).Run(model);
        AssertKept(outcomes.Single(), changes: 3);
        Ops(result).ShouldBe(["Relu", "Slice"]);
        result.Proto.Graph.Node.Select(n => n.Input[0]).ShouldBe(["x", "x"]);
    }

    [Fact]
    public void MiniLm_AllFusions_KeptByThePipeline()
    {
        OnnxModel model = MiniLm.Load();
        IGraphPass[] passes = [new ConstantFolding(), new GeluFusion(), new SkipLayerNormFusion(), new SiblingMatMulMerge(), new DeadNodeElimination()];
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline(passes).Run(model, MiniLm.Inputs(1, 9));
        outcomes.ShouldAllBe(o => o.Kept);
        string[] ops = Ops(result);
        ops.Count(o => o == "BiasGelu").ShouldBe(6);
        ops.Count(o => o == "SkipLayerNormalization").ShouldBe(12);
        ops.ShouldNotContain("Erf");
        // Six layers' Q, K and V projections: 18 MatMuls and their bias Adds become 6 MatMul + Add + Split.
        ops.Count(o => o == "Split").ShouldBe(6);
        ops.Count(o => o == "MatMul").ShouldBe(48 - 18 + 6);
    }
}
