using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Passes;

namespace Kiln.Optimize.Tests;

/// <summary>Each pass on a small graph, checked by running ONNX Runtime before and after (the pipeline does that).</summary>
public sealed class PassTests
{
    [Fact]
    public void Identities_AreRemoved_IncludingOneThatNamesTheGraphOutput()
    {
        OnnxModel model = new GraphBuilder().Input("x", 2, 3).Output("y", 2, 3)
            .Node("Relu", ["x"], ["r"]).Node("Identity", ["r"], ["i"]).Node("Neg", ["i"], ["n"]).Node("Identity", ["n"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new IdentityElimination()]).Run(model);
        outcomes.Single().ShouldSatisfyAllConditions(o => o.Kept.ShouldBeTrue(), o => o.Changes.ShouldBe(2), o => o.MaxAbsDifference.ShouldBe(0));
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Relu", "Neg"]);
        result.Proto.Graph.Node[1].Output.ShouldBe(["y"]);
        model.NodeCount.ShouldBe(4); // the input model is left as it was
    }

    [Fact]
    public void InferenceDropout_IsAnIdentity()
    {
        OnnxModel model = new GraphBuilder().Input("x", 4).Output("y", 4)
            .Node("Dropout", ["x"], ["d"]).Node("Relu", ["d"], ["y"]).Build();
        (OnnxModel result, _) = new PassPipeline([new IdentityElimination()]).Run(model);
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Relu"]);
        result.Proto.Graph.Node[0].Input.ShouldBe(["x"]);
    }

    [Fact]
    public void DeadNodes_AndTheInitializersOnlyTheyRead_AreRemoved()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3).Output("y", 3)
            .Initializer("w", [3], 1f, 2f, 3f).Initializer("unused", [3], 9f, 9f, 9f)
            .Node("Mul", ["x", "w"], ["y"]).Node("Add", ["x", "unused"], ["dead1"]).Node("Relu", ["dead1"], ["dead2"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new DeadNodeElimination()]).Run(model);
        outcomes.Single().Changes.ShouldBe(3); // two nodes and one initializer
        result.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["Mul"]);
        result.Proto.Graph.Initializer.Select(i => i.Name).ShouldBe(["w"]);
    }

    [Fact]
    public void UnreadInitializers_Alone_AreRemoved_AndTheResultKept()
    {
        OnnxModel model = new GraphBuilder().Input("x", 3).Output("y", 3)
            .Initializer("unused", [3], 9f, 9f, 9f).Node("Relu", ["x"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new DeadNodeElimination()]).Run(model);
        outcomes.Single().ShouldSatisfyAllConditions(o => o.Kept.ShouldBeTrue(), o => o.Changes.ShouldBe(1));
        result.Proto.Graph.Initializer.ShouldBeEmpty();
    }

    [Fact]
    public void APassThatChangesTheResult_IsRolledBack_AndNamed()
    {
        OnnxModel model = new GraphBuilder().Input("x", 5).Output("y", 5).Node("Relu", ["x"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new Rewrite("relu-to-sigmoid", n => n.OpType = "Sigmoid")]).Run(model);
        outcomes.Single().ShouldSatisfyAllConditions(o => o.Pass.ShouldBe("relu-to-sigmoid"), o => o.Kept.ShouldBeFalse(), o => o.Reason!.ShouldContain("outputs moved"));
        result.Proto.Graph.Node.Single().OpType.ShouldBe("Relu");
    }

    [Fact]
    public void APassThatOnnxRuntimeRejects_IsRolledBack_AndNamed()
    {
        OnnxModel model = new GraphBuilder().Input("x", 5).Output("y", 5).Node("Relu", ["x"], ["y"]).Build();
        (OnnxModel result, List<PassOutcome> outcomes) = new PassPipeline([new Rewrite("bad-op", n => n.OpType = "NoSuchOp")]).Run(model);
        outcomes.Single().ShouldSatisfyAllConditions(o => o.Pass.ShouldBe("bad-op"), o => o.Kept.ShouldBeFalse(), o => o.Reason!.ShouldContain("ONNX Runtime rejected"));
        result.Proto.Graph.Node.Single().OpType.ShouldBe("Relu");
    }

    private sealed class Rewrite(string name, Action<NodeProto> change) : IGraphPass
    {
        public string Name => name;

        public int Apply(ModelProto model)
        {
            foreach (NodeProto node in model.Graph.Node)
            {
                change(node);
            }
            return model.Graph.Node.Count;
        }
    }
}
