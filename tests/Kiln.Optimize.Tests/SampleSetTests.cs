using System.IO.Compression;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class SampleSetTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-samples-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static OnnxModel TwoInputs() => new GraphBuilder().Input("a", 2, 3).Input("b", 2, 3).Output("y", 2, 3).Node("Add", ["a", "b"], ["y"]).Build();

    private static OnnxModel OneInput() => new GraphBuilder().Input("x", 1, 4).Output("y", 1, 4).Node("Relu", ["x"], ["y"]).Build();

    private static TensorValue Floats(long[] shape, double start) =>
        new(TensorElementType.Float, shape, [.. Enumerable.Range(0, (int)shape.Aggregate(1L, (x, y) => x * y)).Select(i => start + i)]);

    [Fact]
    public void SubfoldersAndNpz_GiveOneSamplePerEntry_InNameOrder()
    {
        foreach (string sample in new[] { "s1", "s0" })
        {
            Directory.CreateDirectory(Path.Combine(_dir, sample));
            SampleSet.Write(Path.Combine(_dir, sample, "a.npy"), Floats([2, 3], sample == "s0" ? 0 : 10));
            SampleSet.Write(Path.Combine(_dir, sample, "b.npy"), Floats([2, 3], 100));
        }
        string scratch = Directory.CreateTempSubdirectory("kiln-npz-").FullName;
        SampleSet.Write(Path.Combine(scratch, "a.npy"), Floats([2, 3], 20));
        SampleSet.Write(Path.Combine(scratch, "b.npy"), Floats([2, 3], 200));
        ZipFile.CreateFromDirectory(scratch, Path.Combine(_dir, "s2.npz"));
        Directory.Delete(scratch, recursive: true);

        List<Dictionary<string, TensorValue>> samples = SampleSet.Load(_dir, TwoInputs());

        samples.Count.ShouldBe(3);
        samples.Select(s => s["a"].Values[0]).ShouldBe([0, 10, 20]);
        samples[2]["b"].Values.ShouldBe([200, 201, 202, 203, 204, 205]);
        samples[0]["a"].Shape.ShouldBe([2, 3]);
        samples[0]["a"].Type.ShouldBe(TensorElementType.Float);
    }

    [Fact]
    public void BareNpyFiles_AreSamples_OfAOneInputModel()
    {
        SampleSet.Write(Path.Combine(_dir, "first.npy"), Floats([1, 4], 1));
        SampleSet.Write(Path.Combine(_dir, "second.npy"), Floats([1, 4], 5));
        List<Dictionary<string, TensorValue>> samples = SampleSet.Load(_dir, OneInput());
        samples.Select(s => s["x"].Values[3]).ShouldBe([4, 8]);
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, TwoInputs())).Message.ShouldContain("one input");
    }

    [Fact]
    public void AWrongShape_IsNamed_WithTheFileAndWhatTheInputExpects()
    {
        string file = Path.Combine(_dir, "bad.npy");
        SampleSet.Write(file, Floats([1, 5], 0));
        var error = Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, OneInput()));
        error.Message.ShouldContain(file);
        error.Message.ShouldContain("'x' float32 [1,4]");
        error.Message.ShouldContain("float32 [1,5]");
    }

    [Fact]
    public void AWrongDtype_AMissingInput_AndAnUnknownName_AreRefused()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "s"));
        SampleSet.Write(Path.Combine(_dir, "s", "a.npy"), new TensorValue(TensorElementType.Int64, [2, 3], new double[6]));
        SampleSet.Write(Path.Combine(_dir, "s", "b.npy"), Floats([2, 3], 0));
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, TwoInputs())).Message.ShouldContain("holds int64 [2,3]");

        SampleSet.Write(Path.Combine(_dir, "s", "a.npy"), Floats([2, 3], 0));
        File.Delete(Path.Combine(_dir, "s", "b.npy"));
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, TwoInputs())).Message.ShouldContain("no b.npy for input 'b'");

        SampleSet.Write(Path.Combine(_dir, "s", "b.npy"), Floats([2, 3], 0));
        SampleSet.Write(Path.Combine(_dir, "s", "c.npy"), Floats([2, 3], 0));
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, TwoInputs())).Message.ShouldContain("no input 'c'");
    }

    [Fact]
    public void NotNpy_AndAnEmptyOrMissingDirectory_AreRefused()
    {
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, OneInput())).Message.ShouldContain("no samples");
        Should.Throw<OptimizeException>(() => SampleSet.Load(Path.Combine(_dir, "nope"), OneInput())).Message.ShouldContain("no such directory");
        string text = Path.Combine(_dir, "text.npy");
        File.WriteAllText(text, "hello, world");
        Should.Throw<OptimizeException>(() => SampleSet.Load(_dir, OneInput())).Message.ShouldContain($"{text}: not a .npy file");
    }
}
