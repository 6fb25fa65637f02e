using Kiln.Optimize.Graph;
using Kiln.Optimize.Verification;

namespace Kiln.Optimize.Tests;

public sealed class OnnxModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-optimize-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static OnnxModel AddRelu() => new GraphBuilder()
        .Input("x", 2, 3).Initializer("b", [3], 1f, -2f, 0.5f).Output("y", 2, 3)
        .Node("Add", ["x", "b"], ["s"]).Node("Relu", ["s"], ["y"]).Build();

    [Fact]
    public void SavedModel_LoadsBack_AndRunsInOnnxRuntime()
    {
        string path = Path.Combine(_dir, "m.onnx");
        AddRelu().Save(path);
        OnnxModel loaded = OnnxModel.Load(path);
        loaded.NodeCount.ShouldBe(2);
        loaded.OpsetVersion.ShouldBe(17);
        loaded.IrVersion.ShouldBe(8);
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, [2, 3], [-1, 0, 1, 2, 3, -4]) };
        ModelRunner.Run(loaded, inputs)["y"].Values.ShouldBe([0, 0, 1.5, 3, 1, 0]);
        File.Exists(path + ".tmp").ShouldBeFalse();
    }

    [Fact]
    public void NotAnOnnxFile_IsNamedInTheError()
    {
        string path = Path.Combine(_dir, "notes.onnx");
        File.WriteAllText(path, "this is not a model\n");
        var error = Should.Throw<OptimizeException>(() => OnnxModel.Load(path));
        error.Message.ShouldContain(path);
        error.Message.ShouldContain("not an ONNX model");
    }

    [Fact]
    public void MissingFile_IsNamedInTheError() =>
        Should.Throw<OptimizeException>(() => OnnxModel.Load(Path.Combine(_dir, "missing.onnx"))).Message.ShouldContain("missing.onnx");

    [Fact]
    public void TopologicalOrder_PutsProducersFirst_AndNamesACycle()
    {
        OnnxModel shuffled = new GraphBuilder().Input("x", 1).Output("z", 1)
            .Node("Relu", ["y"], ["z"], "last").Node("Neg", ["x"], ["y"], "first").Build();
        new GraphIndex(shuffled.Proto.Graph).TopologicalOrder().Select(n => n.Name).ShouldBe(["first", "last"]);

        OnnxModel cyclic = new GraphBuilder().Input("x", 1).Output("b", 1)
            .Node("Add", ["x", "b"], ["a"], "n1").Node("Relu", ["a"], ["b"], "n2").Build();
        Should.Throw<OptimizeException>(() => new GraphIndex(cyclic.Proto.Graph).TopologicalOrder()).Message.ShouldContain("cycle");
    }
}
