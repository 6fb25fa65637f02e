using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Passes;
using Kiln.Optimize.Verification;

namespace Kiln.Optimize.Tests;

public sealed class OpsetUpgradeTests
{
    internal static readonly string ResNet18Onnx = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx");

    private static OnnxModel AtOpset(OnnxModel model, int opset)
    {
        model.Proto.OpsetImport[0].Version = opset;
        return model;
    }

    [Fact]
    public void ResNet18_FromOpset8_RunsTheSame_AtOpset13()
    {
        OnnxModel model = OnnxModel.Load(ResNet18Onnx);
        model.OpsetVersion.ShouldBe(8);
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 3);
        Dictionary<string, TensorValue> before = ModelRunner.Run(model, inputs);

        OnnxModel upgraded = model.Clone();
        int changed = new OpsetUpgrade().Apply(upgraded);

        changed.ShouldBe(22); // the BatchNormalizations lose spatial
        upgraded.OpsetVersion.ShouldBe(13);
        upgraded.IrVersion.ShouldBe(7);
        upgraded.Proto.Graph.Node.Where(n => n.OpType == "BatchNormalization").SelectMany(n => n.Attribute).ShouldNotContain(a => a.Name == "spatial");
        upgraded.Proto.Graph.Input.Select(i => i.Name).ShouldBe(["Input247"]);
        ModelRunner.MaxAbsDifference(before, ModelRunner.Run(upgraded, inputs)).ShouldBeLessThan(1e-4);
    }

    [Fact]
    public void AttributesThatBecameInputs_AndSoftmaxOnAMiddleAxis_KeepTheirResults()
    {
        // Opset 9 forms: Split/Unsqueeze/ReduceSum/Clip/Pad with attributes, Upsample, Dropout with ratio, Softmax on axis 1 of a rank-3 tensor (2-D coercion).
        OnnxModel model = AtOpset(new GraphBuilder()
            .Input("x", 2, 3, 4)
            .Output("au", 1, 2, 3, 1).Output("s", 2, 3, 4).Output("last", 2, 3, 4).Output("r", 2, 3, 1).Output("u", 2, 3, 8).Output("d", 2, 3, 4)
            .Initializer("scales", [3], 1, 1, 2)
            .Node("Split", ["x"], ["a", "b"]).Attribute("axis", 2L).Attribute("split", [1L, 3L])
            .Node("Unsqueeze", ["a"], ["au"]).Attribute("axes", [0L])
            .Node("Softmax", ["x"], ["s"]).Attribute("axis", 1L)
            .Node("Softmax", ["x"], ["last"]).Attribute("axis", 2L)
            .Node("Clip", ["b"], ["c"]).Attribute("min", -0.5f).Attribute("max", 0.5f)
            .Node("Pad", ["c"], ["p"]).Attribute("pads", [0L, 0L, 1L, 0L, 0L, 1L]).Attribute("value", 0.25f)
            .Node("ReduceSum", ["p"], ["r"]).Attribute("axes", [2L]).Attribute("keepdims", 1L)
            .Node("Upsample", ["x", "scales"], ["u"])
            .Node("Dropout", ["x"], ["d"]).Attribute("ratio", 0.3f)
            .Build(), 9);
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 5);
        Dictionary<string, TensorValue> before = ModelRunner.Run(model, inputs);

        OnnxModel upgraded = model.Clone();
        new OpsetUpgrade().Apply(upgraded).ShouldBe(9);

        GraphProto graph = upgraded.Proto.Graph;
        graph.Node.ShouldNotContain(n => n.OpType == "Upsample");
        graph.Node.Single(n => n.OpType == "Resize").Input.Count.ShouldBe(3);
        graph.Node.Count(n => n.OpType == "Flatten").ShouldBe(1); // only the middle-axis Softmax needs the 2-D view
        graph.Node.Where(n => n.OpType != "Resize").SelectMany(n => n.Attribute).Select(a => a.Name)
            .ShouldNotContain(a => a == "split" || a == "axes" || a == "min" || a == "max" || a == "pads" || a == "value" || a == "ratio");
        Dictionary<string, TensorValue> after = ModelRunner.Run(upgraded, inputs);
        ModelRunner.MaxAbsDifference(before, after).ShouldBeLessThan(1e-6);
        after["s"].Values.Take(12).Sum().ShouldBe(1, 1e-5); // one softmax over the 12 values of each batch row, as before 13
    }

    [Fact]
    public void AnOpItDoesNotKnow_IsRefused_NamingTheNodeAndOpsets()
    {
        OnnxModel model = AtOpset(new GraphBuilder().Input("x", 2, 3).Output("y", 2, 3).Node("Scan", ["x"], ["y"], "loop_over_rows").Build(), 8);
        var error = Should.Throw<OptimizeException>(() => new OpsetUpgrade().Apply(model));
        error.Message.ShouldContain("'loop_over_rows' (Scan)");
        error.Message.ShouldContain("from opset 8 to 13");
    }

    [Fact]
    public void AModelAtTheTarget_IsLeftAlone()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2).Output("y", 2).Node("Relu", ["x"], ["y"]).Build();
        new OpsetUpgrade().Apply(model).ShouldBe(0);
        model.OpsetVersion.ShouldBe(17);
    }
}
