using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Passes;

namespace Kiln.Optimize.Tests;

/// <summary>MatMul+Add→Gemm, Conv+BatchNorm folding and constant folding, each checked by the pipeline in ONNX Runtime.</summary>
public sealed class FusionPassTests
{
    [Fact]
    public void MatMulThenAdd_OfA2DInput_BecomesOneGemm()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [5], Values(5, 0.5))
            .Node("MatMul", ["x", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new MatMulAddToGemm()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        NodeProto gemm = result.Proto.Graph.Node.Single();
        gemm.OpType.ShouldBe("Gemm");
        gemm.Input.ShouldBe(["x", "w", "b"]);
        gemm.Output.ShouldBe(["y"]);
    }

    [Theory]
    [InlineData(new long[] { 1, 5 })]
    [InlineData(new long[] { 3, 5 })]
    [InlineData(new long[] { 3, 1 })]
    [InlineData(new long[] { })]
    public void TheBias_MayComeFirst_AndBeAnyShapeThatBroadcastsToMByN(long[] biasShape)
    {
        int count = (int)biasShape.Aggregate(1L, (a, b) => a * b);
        OnnxModel model = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", biasShape, Values(count, 0.5))
            .Node("MatMul", ["x", "w"], ["mm"]).Node("Add", ["b", "mm"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new MatMulAddToGemm()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        result.Proto.Graph.Node.Single().Input.ShouldBe(["x", "w", "b"]);
    }

    [Fact]
    public void A3DInput_AnUnknownRank_A3DBias_OrASecondReader_LeaveMatMulAndAdd()
    {
        OnnxModel rank3 = new GraphBuilder().Input("x", 2, 3, 4).Output("y", 2, 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [5], Values(5))
            .Node("MatMul", ["x", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        OnnxModel unknownRank = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [5], Values(5))
            .Node("Relu", ["x"], ["r"]).Node("MatMul", ["r", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        unknownRank.Proto.Graph.Input[0].Type.TensorType.Shape = null;
        OnnxModel rank3Bias = new GraphBuilder().Input("x", 3, 4).Output("y", 1, 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [1, 1, 5], Values(5))
            .Node("MatMul", ["x", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        OnnxModel twoReaders = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5).Output("z", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [5], Values(5))
            .Node("MatMul", ["x", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Node("Relu", ["mm"], ["z"]).Build();
        foreach (OnnxModel model in new[] { rank3, unknownRank, rank3Bias, twoReaders })
        {
            int before = model.NodeCount;
            var inputs = model == unknownRank ? Verification.ModelRunner.SampleInputs(model, shapes: new Dictionary<string, long[]> { ["x"] = [3, 4] }) : null;
            (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new MatMulAddToGemm()]).Run(model, inputs);
            outcomes.Single().Changes.ShouldBe(0);
            result.NodeCount.ShouldBe(before);
            result.Proto.Graph.Node.ShouldNotContain(n => n.OpType == "Gemm");
        }
    }

    [Fact]
    public void AnIntermediateA_Inferred2D_IsFused()
    {
        // No value_info: shape inference finds Relu(x[3,4]) to be 2-D.
        OnnxModel model = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [5], Values(5))
            .Node("Relu", ["x"], ["r"]).Node("MatMul", ["r", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new MatMulAddToGemm()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Relu", "Gemm"]);
    }

    [Fact]
    public void AnIntermediateA_WhoseValueInfoSays2D_IsFused()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3, 4).Output("y", 3, 5).ValueInfo("r", 3, 4).ValueInfo("mm", 3, 5)
            .Initializer("w", [4, 5], Values(20)).Initializer("b", [3, 5], Values(15))
            .Node("Relu", ["x"], ["r"]).Node("MatMul", ["r", "w"], ["mm"]).Node("Add", ["mm", "b"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new MatMulAddToGemm()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Relu", "Gemm"]);
        result.Proto.Graph.ValueInfo.Select(v => v.Name).ShouldBe(["r"]);
    }

    [Fact]
    public void ConvThenBatchNorm_FoldsIntoTheConv_WithNewInitializers_LeavingASharedWeightAsItWas()
    {
        float[] weight = Values(3 * 2 * 3 * 3);
        OnnxModel model = new GraphBuilder().Input("x", 1, 2, 5, 5).Output("y", 1, 3, 3, 3).Output("z", 1, 3, 3, 3)
            .Initializer("w", [3, 2, 3, 3], weight).Initializer("cb", [3], 0.1f, -0.2f, 0.3f)
            .Initializer("scale", [3], 1.5f, 0.5f, -2f).Initializer("shift", [3], 0.25f, 0f, -0.5f)
            .Initializer("mean", [3], 0.2f, -0.1f, 0.05f).Initializer("var", [3], 0.9f, 1.7f, 0.3f)
            .Node("Conv", ["x", "w", "cb"], ["c"], "conv").Node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]).Attribute("epsilon", 1e-3f)
            .Node("Conv", ["x", "w"], ["z"], "other").Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConvBatchNormFolding()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        GraphProto graph = result.Proto.Graph;
        graph.Node.Select(n => n.OpType).ShouldBe(["Conv", "Conv"]);
        NodeProto conv = graph.Node[0];
        conv.Input.ShouldBe(["x", "w_bn_folded", "cb_bn_folded"]);
        conv.Output.ShouldBe(["y"]);
        graph.Node[1].Input.ShouldBe(["x", "w"]);
        graph.Initializer.Select(i => i.Name).ShouldBe(["w", "w_bn_folded", "cb_bn_folded"]);
        Initializers.ReadFloats(Initializers.Find(graph, "w")!).ShouldBe(weight);
        float factor = 0.5f / MathF.Sqrt(1.7f + 1e-3f);
        Initializers.ReadFloats(Initializers.Find(graph, "w_bn_folded")!)![18].ShouldBe(weight[18] * factor, 1e-6);
        Initializers.ReadFloats(Initializers.Find(graph, "cb_bn_folded")!)![1].ShouldBe(((-0.2f + 0.1f) * factor) + 0f, 1e-6);
    }

    [Fact]
    public void AConvWithoutBias_GetsOne_AndFloatDataWeightsAreRead()
    {
        OnnxModel model = new GraphBuilder().Input("x", 1, 2, 4, 4).Output("y", 1, 2, 4, 4)
            .Initializer("w", [2, 2, 1, 1], 1f, 2f, -1f, 0.5f)
            .Initializer("scale", [2], 2f, 3f).Initializer("shift", [2], 1f, -1f).Initializer("mean", [2], 0.5f, 0f).Initializer("var", [2], 1f, 4f)
            .Node("Conv", ["x", "w"], ["c"]).Node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]).Build();
        TensorProto w = Initializers.Find(model.Proto.Graph, "w")!;
        float[] values = Initializers.ReadFloats(w)!;
        w.RawData = Google.Protobuf.ByteString.Empty;
        w.FloatData.AddRange(values);
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConvBatchNormFolding()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        NodeProto conv = result.Proto.Graph.Node.Single();
        conv.Input.ShouldBe(["x", "w_bn_folded", "w_bias_bn_folded"]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["w_bn_folded", "w_bias_bn_folded"]);
        Initializers.ReadFloats(Initializers.Find(result.Proto.Graph, "w_bias_bn_folded")!)!
            .ShouldBe([(float)((-0.5 * 2 / Math.Sqrt(1 + 1e-5)) + 1), -1f], tolerance: 1e-6);
    }

    [Fact]
    public void ABatchNormAfterAConvWithAnotherReader_OrWithComputedStatistics_IsNotFolded()
    {
        OnnxModel twoReaders = new GraphBuilder().Input("x", 1, 1, 3, 3).Output("y", 1, 1, 3, 3).Output("c", 1, 1, 3, 3)
            .Initializer("w", [1, 1, 1, 1], 2f).Initializer("scale", [1], 2f).Initializer("shift", [1], 1f).Initializer("mean", [1], 0f).Initializer("var", [1], 1f)
            .Node("Conv", ["x", "w"], ["c"]).Node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]).Build();
        OnnxModel computedScale = new GraphBuilder().Input("x", 1, 1, 3, 3).Output("y", 1, 1, 3, 3)
            .Initializer("w", [1, 1, 1, 1], 2f).Initializer("s", [1], 2f).Initializer("shift", [1], 1f).Initializer("mean", [1], 0f).Initializer("var", [1], 1f)
            .Node("Neg", ["s"], ["scale"]).Node("Conv", ["x", "w"], ["c"]).Node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"]).Build();
        foreach (OnnxModel model in new[] { twoReaders, computedScale })
        {
            (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConvBatchNormFolding()]).Run(model);
            outcomes.Single().Changes.ShouldBe(0);
            result.Proto.Graph.Node.ShouldContain(n => n.OpType == "BatchNormalization");
        }
    }

    [Fact]
    public void ConstantNodes_AndNodesOfConstants_BecomeInitializers()
    {
        var constant = new TensorProto { DataType = (int)TensorProto.Types.DataType.Float, Dims = { 3 }, FloatData = { 1f, 2f, 3f } };
        OnnxModel model = new GraphBuilder().Input("x", 3).Output("y", 3)
            .Initializer("w", [3], 0.5f, -1f, 4f)
            .Node("Constant", [], ["k"]).Attribute("value", constant)
            .Node("Add", ["k", "w"], ["sum"]).Node("Constant", [], ["two"]).Attribute("value_float", 2f)
            .Node("Mul", ["sum", "two"], ["scaled"]).Node("Mul", ["x", "scaled"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(model);
        AssertKept(outcomes.Single(), changes: 4);
        GraphProto graph = result.Proto.Graph;
        graph.Node.Select(n => n.OpType).ShouldBe(["Mul"]);
        graph.Node[0].Input.ShouldBe(["x", "scaled"]);
        Initializers.ReadFloats(Initializers.Find(graph, "scaled")!).ShouldBe([3f, 2f, 14f]);
        graph.Initializer.Select(i => i.Name).ShouldBe(["scaled"]);
    }

    [Fact]
    public void IntegerShapeArithmetic_IsFolded_AndTheReshapeOfAnInputStays()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 6).Output("y", 3, 4)
            .Int64Initializer("a", [1], 3).Int64Initializer("b", [1], -1)
            .Node("Concat", ["a", "b"], ["shape"]).Attribute("axis", 0L)
            .Node("Reshape", ["x", "shape"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(model);
        AssertKept(outcomes.Single(), changes: 1);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Reshape"]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["shape"]);
        TensorProto shape = Initializers.Find(result.Proto.Graph, "shape")!;
        shape.DataType.ShouldBe((int)TensorProto.Types.DataType.Int64);
        shape.Dims.ShouldBe([2L]);
        shape.RawData.ToByteArray().ShouldBe([.. BitConverter.GetBytes(3L), .. BitConverter.GetBytes(-1L)]);
    }

    [Fact]
    public void OutputsThatGrow_OrExceedTheLimit_AreNotFolded()
    {
        OnnxModel grows = new GraphBuilder().Input("x", 64, 64).Output("y", 64, 64)
            .Int64Initializer("shape", [2], 64, 64)
            .Node("ConstantOfShape", ["shape"], ["ones"]).Attribute("value", new TensorProto { DataType = 1, Dims = { 1 }, FloatData = { 1f } })
            .Node("Add", ["x", "ones"], ["y"]).Build();
        (OnnxModel kept, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(grows);
        outcomes.Single().Changes.ShouldBe(0);
        kept.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["ConstantOfShape", "Add"]);

        OnnxModel transpose = new GraphBuilder().Input("x", 8, 8).Output("y", 8, 8)
            .Initializer("w", [8, 8], Values(64))
            .Node("Transpose", ["w"], ["wt"]).Node("MatMul", ["x", "wt"], ["y"]).Build();
        new PassPipeline([new ConstantFolding(maxOutputBytes: 255)]).Run(transpose).Outcomes.Single().Changes.ShouldBe(0);
        (OnnxModel folded, List<PassOutcome> foldedOutcomes) = new PassPipeline([new ConstantFolding(maxOutputBytes: 256)]).Run(transpose);
        AssertKept(foldedOutcomes.Single(), changes: 1);
        folded.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["MatMul"]);
        folded.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["wt"]);
    }

    [Fact]
    public void RandomNodes_AndNodesThatWriteAGraphOutput_AreNotFolded()
    {
        OnnxModel model = new GraphBuilder().Input("x", 4).Output("y", 4).Output("n", 4)
            .Initializer("w", [4], 1f, 2f, 3f, 4f)
            .Node("RandomUniformLike", ["w"], ["r"]).Attribute("seed", 3f)
            .Node("Add", ["x", "r"], ["y"]).Node("Neg", ["w"], ["n"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(model);
        outcomes.Single().Changes.ShouldBe(0);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["RandomUniformLike", "Add", "Neg"]);
    }

    [Fact]
    public void ANodeWithTwoOutputs_BecomesTwoInitializers()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2).Output("y", 2)
            .Initializer("w", [4], 1f, 2f, 3f, 4f)
            .Node("Split", ["w"], ["lo", "hi"]).Attribute("axis", 0L).Attribute("num_outputs", 2L)
            .Node("Sub", ["hi", "lo"], ["d"]).Node("Mul", ["x", "d"], ["y"]).Build();
        model.Proto.OpsetImport[0].Version = 18;
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(model);
        AssertKept(outcomes.Single(), changes: 2);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Mul"]);
        Initializers.ReadFloats(Initializers.Find(result.Proto.Graph, "d")!).ShouldBe([2f, 2f]);
    }

    [Fact]
    public void AnInitializerThatIsAlsoAGraphInput_IsNotConstantFromIr4On_ButIsBefore()
    {
        OnnxModel Build(long irVersion)
        {
            OnnxModel model = new GraphBuilder().Input("x", 3).Input("w", 3).Output("y", 3)
                .Initializer("w", [3], 1f, 2f, 3f)
                .Node("Neg", ["w"], ["n"]).Node("Add", ["x", "n"], ["y"]).Build();
            model.Proto.IrVersion = irVersion;
            return model;
        }
        new PassPipeline([new ConstantFolding()]).Run(Build(8)).Outcomes.Single().Changes.ShouldBe(0);
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding()]).Run(Build(3));
        AssertKept(outcomes.Single(), changes: 1);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Add"]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["n"]);
        result.Proto.Graph.Input.Select(i => i.Name).ShouldBe(["x", "n"]); // before IR 4 an initializer is also an input
    }

    private static void AssertKept(PassOutcome outcome, int changes) => outcome.ShouldSatisfyAllConditions(
        o => o.Kept.ShouldBeTrue(o.Reason), o => o.Changes.ShouldBe(changes), o => o.MaxAbsDifference.ShouldBeLessThanOrEqualTo(1e-5));

    private static float[] Values(int count, double scale = 1) => [.. Enumerable.Range(0, count).Select(i => (float)(Math.Sin(i + 1) * scale))];
}
