using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Passes;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

/// <summary>Fixing an input to a value, then folding the branch it decides (as a sample rate does in Silero VAD).</summary>
public sealed class SpecializationTests
{
    /// <summary>y = If(rate == 16000) then x·2 else x + 100, the condition computed from the int64 input "rate".</summary>
    private static OnnxModel RateSwitch()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3).Output("y", 3).Initializer("two", [1], 2f).Initializer("hundred", [1], 100f).Build();
        GraphProto graph = model.Proto.Graph;
        var rate = new TensorProto { Name = "rate16k", DataType = (int)TensorProto.Types.DataType.Int64 };
        rate.Int64Data.Add(16000);
        graph.Initializer.Add(rate);
        graph.Input.Add(new ValueInfoProto
        {
            Name = "rate",
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Int64, Shape = new TensorShapeProto() } },
        });
        var equal = new NodeProto { OpType = "Equal", Name = "is16k" };
        equal.Input.AddRange(["rate", "rate16k"]);
        equal.Output.Add("cond");
        graph.Node.Add(equal);
        var node = new NodeProto { OpType = "If", Name = "branch" };
        node.Input.Add("cond");
        node.Output.Add("y");
        node.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Mul", "two") });
        node.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = Branch("Add", "hundred") });
        graph.Node.Add(node);
        return OnnxModel.FromBytes(model.ToBytes());

        static GraphProto Branch(string op, string constant)
        {
            var branch = new GraphProto { Name = op };
            var inner = new NodeProto { OpType = op, Name = "inner" };
            inner.Input.AddRange(["x", constant]);
            inner.Output.Add("out");
            branch.Node.Add(inner);
            branch.Output.Add(new ValueInfoProto
            {
                Name = "out",
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
            });
            return branch;
        }
    }

    [Theory]
    [InlineData(16000, "Mul", new double[] { 2, 4, 6 })]
    [InlineData(8000, "Add", new double[] { 101, 102, 103 })]
    public void SpecializedInput_FoldsTheBranchItDecides(double rate, string op, double[] expected)
    {
        OnnxModel model = RateSwitch();
        model.TotalNodeCount.ShouldBe(4);
        OnnxModel specialized = model.Clone();
        new InputSpecialization(new Dictionary<string, TensorValue> { ["rate"] = new(TensorElementType.Int64, [], [rate]) }).Apply(specialized.Proto);
        specialized.Proto.Graph.Input.Select(i => i.Name).ShouldBe(["x"]);

        var x = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [3], [1, 2, 3]) };
        var reference = ModelRunner.Run(model, new Dictionary<string, TensorValue>(x) { ["rate"] = new(TensorElementType.Int64, [], [rate]) });
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new ConstantFolding(), new IfElimination(), new DeadNodeElimination()]).Run(specialized, x, reference);
        outcomes.ShouldAllBe(o => o.Kept);
        outcomes.Single(o => o.Pass == "if-elimination").Changes.ShouldBe(1);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe([op]);
        result.Proto.Graph.Node.Single().Output.ShouldBe(["y"]);
        ModelRunner.Run(result, x)["y"].Values.ShouldBe(expected);
    }

    [Fact]
    public void AnUnknownInput_IsRefused_NamingTheInputs()
    {
        var error = Should.Throw<OptimizeException>(() =>
            new InputSpecialization(new Dictionary<string, TensorValue> { ["sr"] = new(TensorElementType.Int64, [], [16000]) }).Apply(RateSwitch().Proto));
        error.Message.ShouldContain("'sr'");
        error.Message.ShouldContain("x, rate");
    }

    [Fact]
    public void AnIfOnARuntimeCondition_IsLeftAlone()
    {
        OnnxModel model = RateSwitch();
        new IfElimination().Apply(model.Proto).ShouldBe(0);
        model.TotalNodeCount.ShouldBe(4);
    }
}
