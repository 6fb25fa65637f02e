using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;

namespace Kiln.Optimize.Tests;

public sealed class Float16Tests
{
    private const int Half = (int)TensorProto.Types.DataType.Float16;
    private const int Float = (int)TensorProto.Types.DataType.Float;

    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    /// <summary>
    /// x[4,32] → MatMul(W) + b → LayerNormalization → Softmax → Mul(Constant 2.0) → Max(·, floor) (block-listed) →
    /// MatMul(W2) → y, and a second output z = Cast(Shape(x)) to float (computed in float16 inside).
    /// </summary>
    private static OnnxModel Model()
    {
        var two = new AttributeProto { Name = "value_float", Type = AttributeProto.Types.AttributeType.Float, F = 2f };
        OnnxModel model = new GraphBuilder()
            .Input("x", 4, 32).Output("y", 4, 8).Output("z", 2).ValueInfo("h", 4, 64)
            .Initializer("W", [32, 64], Random(32 * 64, 1, 0.3f)).Initializer("b", [64], Random(64, 2, 0.1f))
            .Initializer("gamma", [64], Random(64, 3, 1f)).Initializer("beta", [64], Random(64, 4, 0.1f))
            .Initializer("floor", [1], 0.001f).Initializer("W2", [64, 8], Random(64 * 8, 5, 0.3f))
            .Node("MatMul", ["x", "W"], ["m"], "fc1").Node("Add", ["m", "b"], ["h"], "bias")
            .Node("LayerNormalization", ["h", "gamma", "beta"], ["n"], "norm").Attribute("axis", -1L)
            .Node("Softmax", ["n"], ["s"], "softmax").Node("Constant", [], ["two"], "two")
            .Node("Mul", ["s", "two"], ["d"], "double").Node("Max", ["d", "floor"], ["f"], "floor_max")
            .Node("MatMul", ["f", "W2"], ["y"], "fc2")
            .Node("Shape", ["x"], ["shape"], "shape").Node("Cast", ["shape"], ["z"], "cast").Attribute("to", (long)Float)
            .Build();
        model.Proto.Graph.Node.Single(n => n.Name == "two").Attribute.Add(two);
        return model;
    }

    [Fact]
    public void Float16_KeepsFloat32InputsAndOutputs_HalvesTheWeights_AndRunsClose()
    {
        OnnxModel model = Model();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 6);
        Dictionary<string, TensorValue> expected = ModelRunner.Run(model, inputs);
        OnnxModel half = model.Clone();
        List<string> converted = new Float16Converter().Apply(half);
        converted.ShouldContain("fc1");
        converted.ShouldContain("two");
        converted.ShouldNotContain("floor_max");

        GraphProto graph = half.Proto.Graph;
        graph.Input.Single().Type.TensorType.ElemType.ShouldBe(Float);
        graph.Output.ShouldAllBe(o => o.Type.TensorType.ElemType == Float);
        graph.Initializer.Single(i => i.Name == "W").DataType.ShouldBe(Half);
        graph.Initializer.Single(i => i.Name == "floor").DataType.ShouldBe(Float); // only the block-listed Max reads it
        graph.ValueInfo.Single(v => v.Name == "h").Type.TensorType.ElemType.ShouldBe(Half);
        graph.Node.Single(n => n.Name == "two").Attribute.Single().T.DataType.ShouldBe(Half);
        graph.Node.Single(n => n.Name == "cast").Attribute.Single().I.ShouldBe(Half);
        // Max stays float32: Casts on its way in and out.
        NodeProto max = graph.Node.Single(n => n.Name == "floor_max");
        graph.Node.Single(n => n.Output.Contains(max.Input[0])).OpType.ShouldBe("Cast");
        graph.Node.Single(n => n.Input.Contains("x") && n.OpType == "Cast").Attribute.Single().I.ShouldBe(Half);
        graph.Node[^1].OpType.ShouldBe("Cast");

        Dictionary<string, TensorValue> actual = ModelRunner.Run(half, inputs);
        actual["y"].Type.ShouldBe(expected["y"].Type);
        actual["z"].Values.ShouldBe(expected["z"].Values);
        double[] e = expected["y"].Values, a = actual["y"].Values;
        double scale = e.Max(Math.Abs);
        e.Zip(a, (x, y) => Math.Abs(x - y)).Max().ShouldBeLessThan(0.01 * scale);
        ModelRunner.Cosine(expected, actual).ShouldBeGreaterThan(0.9999);
        half.ToBytes().Length.ShouldBeLessThan((int)(model.ToBytes().Length * 0.6));
    }

    [Fact]
    public void KeptOpTypes_AndExcludedNodes_StayFloat32()
    {
        OnnxModel half = Model();
        List<string> converted = new Float16Converter { KeepFloat32OpTypes = new HashSet<string> { "Softmax" }, Exclude = new HashSet<string> { "fc2" } }.Apply(half);
        converted.ShouldNotContain("softmax");
        converted.ShouldNotContain("fc2");
        GraphProto graph = half.Proto.Graph;
        graph.Initializer.Single(i => i.Name == "W2").DataType.ShouldBe(Float);
        NodeProto softmax = graph.Node.Single(n => n.Name == "softmax");
        NodeProto cast = graph.Node.Single(n => n.Output.Contains(softmax.Input[0]));
        cast.OpType.ShouldBe("Cast");
        cast.Attribute.Single().I.ShouldBe(Float);
        // fc2 writes the float32 graph output itself: no final Cast for y.
        graph.Node.Single(n => n.Name == "fc2").Output.Single().ShouldBe("y");
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(Model(), seed: 2);
        ModelRunner.Cosine(ModelRunner.Run(Model(), inputs), ModelRunner.Run(half, inputs)).ShouldBeGreaterThan(0.9999);
    }

    [Fact]
    public void LargeWeights_Saturate_AndSubgraphsAreRefused()
    {
        OnnxModel model = new GraphBuilder().Input("x", 1, 2).Output("y", 1, 2).Initializer("big", [2], 1e6f, -3f)
            .Node("Mul", ["x", "big"], ["y"]).Build();
        new Float16Converter().Apply(model);
        TensorProto big = model.Proto.Graph.Initializer.Single();
        BitConverter.ToHalf(big.RawData.Span[..2]).ShouldBe((Half)65504f);

        OnnxModel withIf = Model();
        var branch = new GraphProto { Name = "branch" };
        withIf.Proto.Graph.Node.Add(new NodeProto { OpType = "If", Name = "choose", Input = { "c" }, Output = { "o" }, Attribute = { new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch } } });
        Should.Throw<OptimizeException>(() => new Float16Converter().Apply(withIf)).Message.ShouldContain("'choose' (If)");
    }
}
