using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class ExternalDataTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-external-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>x[2,64] → MatMul(W 64×300) + b[300] → Relu → y; W (76.8 kB) and b (1.2 kB) are large enough to go external, s (one float) is not.</summary>
    private static OnnxModel Layer()
    {
        var random = new Random(5);
        float[] w = [.. Enumerable.Range(0, 64 * 300).Select(_ => (float)(random.NextDouble() - 0.5))];
        float[] b = [.. Enumerable.Range(0, 300).Select(i => i * 0.01f)];
        return new GraphBuilder().Input("x", 2, 64).Output("y", 2, 300)
            .Initializer("W", [64, 300], w).Initializer("b", [300], b).Initializer("s", [], 2f)
            .Node("MatMul", ["x", "W"], ["h"]).Node("Add", ["h", "b"], ["hb"]).Node("Mul", ["hb", "s"], ["m"]).Node("Relu", ["m"], ["y"]).Build();
    }

    private static Dictionary<string, TensorValue> Inputs() =>
        new() { ["x"] = new(TensorElementType.Float, [2, 64], [.. Enumerable.Range(0, 128).Select(i => Math.Sin(i))]) };

    [Fact]
    public void OverThreshold_WeightsGoToOneSideFile_LoadBack_AndRunInOnnxRuntimeFromThePath()
    {
        OnnxModel model = Layer();
        double[] expected = ModelRunner.Run(model, Inputs())["y"].Values;
        string path = Path.Combine(_dir, "layer.onnx");

        model.Save(path, new OnnxSaveOptions { ExternalDataThreshold = 10_000 });

        File.Exists(path + ".data").ShouldBeTrue();
        new FileInfo(path + ".data").Length.ShouldBe((64 * 300 * 4) + (300 * 4));
        new FileInfo(path).Length.ShouldBeLessThan(2000);
        // The model in memory is unchanged by saving.
        model.Proto.Graph.Initializer.ShouldAllBe(i => i.DataLocation == TensorProto.Types.DataLocation.Default && !i.RawData.IsEmpty);
        TensorProto onDisk = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Initializer.Single(i => i.Name == "W");
        onDisk.DataLocation.ShouldBe(TensorProto.Types.DataLocation.External);
        onDisk.ExternalData.Single(e => e.Key == "location").Value.ShouldBe("layer.onnx.data");
        ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Initializer.Single(i => i.Name == "s").DataLocation.ShouldBe(TensorProto.Types.DataLocation.Default);

        using (InferenceSession session = OnnxSessionFactory.Open(path, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL }))
        {
            ModelRunner.RunSession(session, Inputs())["y"].Values.ShouldBe(expected);
        }

        OnnxModel loaded = OnnxModel.Load(path);
        loaded.Proto.Graph.Initializer.ShouldAllBe(i => i.DataLocation == TensorProto.Types.DataLocation.Default);
        loaded.ToBytes().Length.ShouldBe(model.ToBytes().Length);
        ModelRunner.Run(loaded, Inputs())["y"].Values.ShouldBe(expected);
    }

    [Fact]
    public void UnderThreshold_NoSideFile()
    {
        string path = Path.Combine(_dir, "small.onnx");
        Layer().Save(path);
        File.Exists(path + ".data").ShouldBeFalse();
        OnnxModel.Load(path).InitializerBytes.ShouldBe((64 * 300 * 4) + (300 * 4) + 4);
    }

    [Fact]
    public void PassesAndConstantFolding_WorkOnAModelLoadedWithExternalData()
    {
        // W·2 is computed from two constants: constant folding must see W's bytes, which came from the side file.
        var random = new Random(2);
        float[] w = [.. Enumerable.Range(0, 32 * 32).Select(_ => (float)random.NextDouble())];
        OnnxModel model = new GraphBuilder().Input("x", 1, 32).Output("y", 1, 32)
            .Initializer("W", [32, 32], w).Initializer("two", [], 2f)
            .Node("Mul", ["W", "two"], ["W2"]).Node("MatMul", ["x", "W2"], ["y"]).Build();
        string path = Path.Combine(_dir, "fold.onnx");
        model.Save(path, new OnnxSaveOptions { ExternalDataThreshold = 0 });

        OnnxModel loaded = OnnxModel.Load(path);
        (OnnxModel folded, var outcomes) = new Passes.PassPipeline([new Passes.ConstantFolding()]).Run(loaded);
        outcomes.Single().Kept.ShouldBeTrue();
        folded.Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["MatMul"]);
        var inputs = new Dictionary<string, TensorValue> { ["x"] = new(TensorElementType.Float, [1, 32], [.. Enumerable.Repeat(1.0, 32)]) };
        ModelRunner.Run(folded, inputs)["y"].Values[0].ShouldBe(2 * Enumerable.Range(0, 32).Sum(k => (double)w[k * 32]), 1e-3);
    }

    [Fact]
    public void SessionForAModelOverTheInlineLimit_OpensFromAFileWithExternalData()
    {
        OnnxModel model = Layer();
        double[] expected = ModelRunner.Run(model, Inputs())["y"].Values;
        using InferenceSession session = ModelRunner.Open(model, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL }, inlineLimit: 1000);
        ModelRunner.RunSession(session, Inputs())["y"].Values.ShouldBe(expected);
    }

    [Theory]
    [InlineData("../outside.data")]
    [InlineData("sub/../../outside.data")]
    [InlineData("/etc/passwd")]
    public void ExternalLocation_OutsideTheModelFolder_IsRefused(string location)
    {
        string path = Path.Combine(_dir, "escape.onnx");
        Layer().Save(path, new OnnxSaveOptions { ExternalDataThreshold = 0 });
        ModelProto proto = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        proto.Graph.Initializer.Single(i => i.Name == "W").ExternalData.Single(e => e.Key == "location").Value = location;
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(proto));

        var error = Should.Throw<OptimizeException>(() => OnnxModel.Load(path));
        error.Message.ShouldContain(path);
        error.Message.ShouldContain("outside the model's folder");
    }

    [Fact]
    public void ExternalData_ShorterThanDeclared_IsNamed()
    {
        string path = Path.Combine(_dir, "short.onnx");
        Layer().Save(path, new OnnxSaveOptions { ExternalDataThreshold = 0 });
        using (FileStream data = File.OpenWrite(path + ".data"))
        {
            data.SetLength(100);
        }
        var error = Should.Throw<OptimizeException>(() => OnnxModel.Load(path));
        error.Message.ShouldContain("tensor 'W'");
        error.Message.ShouldContain("outside");
    }
}
