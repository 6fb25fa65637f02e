using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Tests;

public sealed class Int4QuantizationTests
{
    private static float[] Random(int count, int seed, float amplitude)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
    }

    /// <summary>x[3, K] → MatMul(W K×N) → Tanh → MatMul(W2 N×8) → y.</summary>
    private static OnnxModel Model(int k, int n, params long[] leading) => new GraphBuilder()
        .Input("x", [.. leading, k]).Output("y", [.. leading, 8])
        .Initializer("W", [k, n], Random(k * n, 1, 0.3f)).Initializer("W2", [n, 8], Random(n * 8, 2, 0.3f))
        .Node("MatMul", ["x", "W"], ["h"], "fc1").Node("Tanh", ["h"], ["t"]).Node("MatMul", ["t", "W2"], ["y"], "fc2").Build();

    /// <summary>Reads a MatMulNBits weight back to a float [K, N] matrix, from the documented layout, independently of the quantizer.</summary>
    private static double[] Dequantize(GraphProto graph, NodeProto node)
    {
        long Attr(string name) => node.Attribute.Single(a => a.Name == name).I;
        int k = (int)Attr("K"), n = (int)Attr("N"), block = (int)Attr("block_size");
        Attr("bits").ShouldBe(4);
        int blocks = (k + block - 1) / block;
        TensorProto b = graph.Initializer.Single(i => i.Name == node.Input[1]);
        b.Dims.ShouldBe([n, blocks, block / 2]);
        byte[] codes = b.RawData.ToByteArray();
        float[] scales = Graph.Initializers.ReadFloats(graph.Initializer.Single(i => i.Name == node.Input[2]))!;
        scales.Length.ShouldBe(n * blocks);
        byte[]? zeroPoints = node.Input.Count > 3 ? graph.Initializer.Single(i => i.Name == node.Input[3]).RawData.ToByteArray() : null;
        var w = new double[k * n];
        for (int col = 0; col < n; col++)
        {
            for (int row = 0; row < k; row++)
            {
                int blockIndex = row / block, within = row % block;
                byte pair = codes[(((col * blocks) + blockIndex) * (block / 2)) + (within / 2)];
                int code = within % 2 == 0 ? pair & 0xF : pair >> 4;
                int zeroPoint = 8;
                if (zeroPoints is not null)
                {
                    byte z = zeroPoints[(col * ((blocks + 1) / 2)) + (blockIndex / 2)];
                    zeroPoint = blockIndex % 2 == 0 ? z & 0xF : z >> 4;
                }
                w[(row * n) + col] = (code - zeroPoint) * (double)scales[(col * blocks) + blockIndex];
            }
        }
        return w;
    }

    private static double[] MatMul(double[] a, double[] w, int k, int n)
    {
        int m = a.Length / k;
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int t = 0; t < k; t++)
                {
                    sum += a[(i * k) + t] * w[(t * n) + j];
                }
                y[(i * n) + j] = sum;
            }
        }
        return y;
    }

    [Theory]
    [InlineData(64, 48, 32, true)]
    [InlineData(64, 48, 32, false)]
    [InlineData(40, 24, 32, true)] // K not a multiple of the block: padded
    [InlineData(200, 16, 128, false)] // two blocks, odd zero-point count
    [InlineData(256, 16, 128, true)]
    public void MatMulNBits_EqualsTheDequantizedReference_AndStaysCloseToFloat(int k, int n, int blockSize, bool symmetric)
    {
        OnnxModel model = Model(k, n, 3);
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 5);
        OnnxModel quantized = model.Clone();
        new Int4WeightQuantizer { BlockSize = blockSize, Symmetric = symmetric }.Apply(quantized).ShouldBe(["fc1", "fc2"]);

        GraphProto graph = quantized.Proto.Graph;
        graph.Node.ShouldNotContain(node => node.OpType == "MatMul");
        graph.Initializer.Select(i => i.Name).ShouldNotContain("W");
        quantized.Proto.OpsetImport.ShouldContain(o => o.Domain == "com.microsoft");
        NodeProto first = graph.Node[0];
        first.OpType.ShouldBe("MatMulNBits");
        first.Domain.ShouldBe("com.microsoft");
        (first.Input.Count == 4).ShouldBe(!symmetric);

        // The first layer alone, through ORT, against W dequantized in C#.
        OnnxModel firstLayer = quantized.Clone();
        firstLayer.Proto.Graph.Node.RemoveAt(2);
        firstLayer.Proto.Graph.Node.RemoveAt(1);
        firstLayer.Proto.Graph.Output.Clear();
        firstLayer.Proto.Graph.Output.Add(new ValueInfoProto { Name = "h", Type = quantized.Proto.Graph.Input[0].Type.Clone() });
        firstLayer.Proto.Graph.Output[0].Type.TensorType.Shape.Dim[1].DimValue = n;
        double[] actual = ModelRunner.Run(firstLayer, inputs)["h"].Values;
        double[] expected = MatMul(inputs["x"].Values.Select(v => (double)(float)v).ToArray(), Dequantize(graph, first), k, n);
        actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max().ShouldBeLessThan(1e-4);

        double[] floatOutput = ModelRunner.Run(model, inputs)["y"].Values;
        double[] int4Output = ModelRunner.Run(quantized, inputs)["y"].Values;
        ModelRunner.Cosine(new Dictionary<string, TensorValue> { ["y"] = new(default, [], floatOutput) }, new Dictionary<string, TensorValue> { ["y"] = new(default, [], int4Output) })
            .ShouldBeGreaterThan(0.99);
    }

    /// <summary>ids [2, 3] → Gather(table [rows, width]) → y [2, 3, width], and a MatMul that int4 also takes.</summary>
    private static OnnxModel Embedding(int rows, int width) => new GraphBuilder()
        .Int64Input("ids", 2, 3).Input("x", 3, 64).Output("y", 2, 3, width).Output("z", 3, 8)
        .Initializer("table", [rows, width], Random(rows * width, 7, 0.5f)).Initializer("W", [64, 8], Random(64 * 8, 8, 0.3f))
        .Node("Gather", ["table", "ids"], ["y"], "embed").Node("MatMul", ["x", "W"], ["z"], "fc").Build();

    [Theory]
    [InlineData(10, 64, 32, true)]
    [InlineData(7, 256, 128, true)]
    [InlineData(10, 64, 32, false)]
    [InlineData(7, 96, 32, false)] // three blocks a row: the last zero-point byte holds one
    public void Gather_BecomesGatherBlockQuantized_EqualToTheDequantizedTable(int rows, int width, int blockSize, bool symmetric)
    {
        OnnxModel model = Embedding(rows, width);
        var inputs = new Dictionary<string, TensorValue>
        {
            ["ids"] = new(TensorElementType.Int64, [2, 3], [0, rows - 1, 3, 3, -1, rows / 2]),
            ["x"] = ModelRunner.SampleInputs(model, seed: 4)["x"],
        };
        OnnxModel quantized = model.Clone();
        new Int4WeightQuantizer { BlockSize = blockSize }.Apply(quantized).ShouldBe(["fc"]); // tables only when asked
        quantized = model.Clone();
        new Int4WeightQuantizer { BlockSize = blockSize, Symmetric = symmetric, OpTypes = Int4WeightQuantizer.SupportedOpTypes }.Apply(quantized).ShouldBe(["embed", "fc"]);

        GraphProto graph = quantized.Proto.Graph;
        NodeProto gather = graph.Node.Single(n => n.OpType == "GatherBlockQuantized");
        gather.Domain.ShouldBe("com.microsoft");
        graph.Initializer.Select(i => i.Name).ShouldNotContain("table");
        // Read the table back from the documented layout, independently of the quantizer.
        TensorProto codes = graph.Initializer.Single(i => i.Name == gather.Input[0]);
        codes.Dims.ShouldBe([rows, width / 2]);
        float[] scales = Graph.Initializers.ReadFloats(graph.Initializer.Single(i => i.Name == gather.Input[2]))!;
        scales.Length.ShouldBe(rows * (width / blockSize));
        byte[] packed = codes.RawData.ToByteArray();
        int blocks = width / blockSize;
        byte[]? zeroPoints = null;
        if (symmetric)
        {
            gather.Input.Count.ShouldBe(3);
        }
        else
        {
            TensorProto zp = graph.Initializer.Single(i => i.Name == gather.Input[3]);
            zp.Dims.ShouldBe([rows, (blocks + 1) / 2]);
            zeroPoints = zp.RawData.ToByteArray();
        }
        int Code(int row, int column)
        {
            byte pair = packed[(row * (width / 2)) + (column / 2)];
            return column % 2 == 0 ? pair & 0xF : pair >> 4;
        }
        int ZeroPoint(int row, int block)
        {
            if (zeroPoints is null)
            {
                return 8;
            }
            byte pair = zeroPoints[(row * ((blocks + 1) / 2)) + (block / 2)];
            return block % 2 == 0 ? pair & 0xF : pair >> 4;
        }
        double Dequantized(int row, int column) =>
            (Code(row, column) - ZeroPoint(row, column / blockSize)) * (double)scales[(row * blocks) + (column / blockSize)];

        double[] actual = ModelRunner.Run(quantized, inputs)["y"].Values;
        double[] table = Random(rows * width, 7, 0.5f).Select(v => (double)v).ToArray();
        double[] ids = inputs["ids"].Values;
        double worstAgainstReference = 0, worstAgainstFloat = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            int row = ids[i] < 0 ? (int)ids[i] + rows : (int)ids[i]; // Gather counts negative indices from the end
            for (int c = 0; c < width; c++)
            {
                double y = actual[(i * width) + c];
                worstAgainstReference = Math.Max(worstAgainstReference, Math.Abs(y - Dequantized(row, c)));
                // Half a step, or a whole one where the code is clipped: at 15 (symmetric: the block's extreme maps to −8
                // exactly, so +8 rounds to 7), or asymmetric at 0 or 15 once the zero point was rounded.
                double step = Math.Abs(scales[(row * blocks) + (c / blockSize)]);
                int code = Code(row, c);
                bool clipped = code == 15 || (!symmetric && code == 0);
                worstAgainstFloat = Math.Max(worstAgainstFloat, Math.Abs(y - table[(row * width) + c]) - (clipped ? step : step / 2));
            }
        }
        worstAgainstReference.ShouldBeLessThan(1e-6);
        worstAgainstFloat.ShouldBeLessThanOrEqualTo(1e-6);
    }

    [Fact]
    public void ModelOptimizer_WithInt4AndGatherInOpTypes_WritesGatherBlockQuantized()
    {
        string folder = Directory.CreateTempSubdirectory("kiln-int4-gather-").FullName;
        try
        {
            string input = Path.Combine(folder, "embedding.onnx"), output = Path.Combine(folder, "int4.onnx");
            Embedding(16, 64).Save(input);
            OptimizationReport report = ModelOptimizer.Run(input, output, new OptimizeOptions
            {
                Quantize = QuantizeMode.Int4,
                OpTypes = new HashSet<string>(["MatMul", "Gather"], StringComparer.Ordinal),
                MeasureTime = TimeSpan.FromMilliseconds(20),
            });
            report.Steps.Single(s => s.Step == "int4").Detail.ShouldContain("2 node(s) quantized");
            OnnxModel.Load(output).Proto.Graph.Node.Select(n => n.OpType).ShouldBe(["GatherBlockQuantized", "MatMulNBits"], ignoreOrder: true);
            report.Result.Cosine.ShouldBeGreaterThan(0.99);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void Gather_StaysFloat_WhenTheWidthIsNotAMultipleOfTheBlock()
    {
        var all = Int4WeightQuantizer.SupportedOpTypes;
        new Int4WeightQuantizer { BlockSize = 32, OpTypes = all }.Apply(Embedding(5, 48)).ShouldBe(["fc"]);
        new Int4WeightQuantizer { BlockSize = 32, OpTypes = all, Symmetric = false }.Apply(Embedding(5, 48)).ShouldBe(["fc"]);
        Should.Throw<OptimizeException>(() => new Int4WeightQuantizer { OpTypes = new HashSet<string> { "Conv" } }.Apply(Embedding(5, 64))).Message.ShouldContain("Conv");
    }

    [Fact]
    public void QuantizedBlocks_ReproduceTheWeights_WithinHalfAStep()
    {
        float[] w = Random(64 * 4, 9, 1f);
        Int4Blocks blocks = Int4WeightQuantizer.Quantize(w, 64, 4, 32, symmetric: false);
        for (int col = 0; col < 4; col++)
        {
            for (int row = 0; row < 64; row++)
            {
                int b = row / 32;
                float scale = blocks.Scales[(col * 2) + b];
                byte pair = blocks.Codes[(((col * 2) + b) * 16) + ((row % 32) / 2)];
                int code = row % 2 == 0 ? pair & 0xF : pair >> 4;
                int zp = b == 0 ? blocks.ZeroPoints![col] & 0xF : blocks.ZeroPoints![col] >> 4;
                Math.Abs(((code - zp) * (double)scale) - w[(row * 4) + col]).ShouldBeLessThanOrEqualTo((Math.Abs(scale) / 2.0) + 1e-6);
            }
        }
    }

    [Fact]
    public void ThreeDimensionalActivations_AndASmallerFile()
    {
        OnnxModel model = Model(128, 64, 2, 3);
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 2);
        OnnxModel quantized = model.Clone();
        new Int4WeightQuantizer { BlockSize = 32 }.Apply(quantized).Count.ShouldBe(2);
        ModelRunner.Cosine(ModelRunner.Run(model, inputs), ModelRunner.Run(quantized, inputs)).ShouldBeGreaterThan(0.99);
        // 4 bits + a 4-byte scale per 32 values: 5 bits a weight against 32.
        quantized.ToBytes().Length.ShouldBeLessThan(model.ToBytes().Length / 5);
    }

    [Fact]
    public void ExcludedNodes_StayFloat_AndBadBlockSizesAreRefused()
    {
        OnnxModel model = Model(64, 32, 3);
        new Int4WeightQuantizer { Exclude = new HashSet<string> { "fc2" } }.Apply(model).ShouldBe(["fc1"]);
        model.Proto.Graph.Node.Single(n => n.OpType == "MatMul").Name.ShouldBe("fc2");
        Should.Throw<OptimizeException>(() => new Int4WeightQuantizer { BlockSize = 48 }.Apply(Model(64, 32, 3))).Message.ShouldContain("48");
    }

    [Fact]
    public void Budget_WithInt4_LeavesTheWorseLayerInFloat()
    {
        OnnxModel model = Model(64, 16, 4);
        IReadOnlyDictionary<string, TensorValue>[] samples = [ModelRunner.SampleInputs(model, 1)];
        Dictionary<string, TensorValue> reference = ModelRunner.Run(model, samples[0]);
        double Alone(string node)
        {
            OnnxModel copy = model.Clone();
            new Int4WeightQuantizer { Exclude = new HashSet<string> { node == "fc1" ? "fc2" : "fc1" } }.Apply(copy);
            return ModelRunner.Cosine(reference, ModelRunner.Run(copy, samples[0]));
        }
        (double fc1, double fc2) = (Alone("fc1"), Alone("fc2"));
        string worse = fc1 < fc2 ? "fc1" : "fc2", better = worse == "fc1" ? "fc2" : "fc1";

        BudgetResult result = new AccuracyBudget([new AccuracyBudgetSpec(AccuracyMetric.Cosine, Math.Max(fc1, fc2) - 1e-9)], exclude => new Int4WeightQuantizer { Exclude = exclude }).Quantize(model, samples);
        result.Accuracy.Cosine.ShouldBeGreaterThanOrEqualTo(Math.Max(fc1, fc2) - 1e-9);
        result.BudgetMet.ShouldBeTrue();
        result.KeptFloat.ShouldBe([worse]);
        result.Quantized.ShouldBe([better]);
        result.NodeErrors[worse].Cosine.ShouldBeLessThan(result.NodeErrors[better].Cosine);
        result.Model.Proto.Graph.Node.Single(n => n.Name == worse).OpType.ShouldBe("MatMul");
        result.Model.Proto.Graph.Node.Count(n => n.OpType == "MatMulNBits").ShouldBe(1);
    }

    [Fact]
    public void Gemm_TransposedScaledAndBiased_BecomesMatMulNBitsAndAdd_EqualToTheReference()
    {
        float[] b = Random(24 * 64, 3, 0.3f), c = Random(24, 4, 0.2f);
        OnnxModel model = new GraphBuilder().Input("x", 3, 64).Output("y", 3, 24)
            .Initializer("B", [24, 64], b).Initializer("C", [24], c)
            .Node("Gemm", ["x", "B", "C"], ["y"], "g").Attribute("transB", 1L).Attribute("alpha", 0.5f).Attribute("beta", 2f).Build();
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, seed: 3);
        OnnxModel quantized = model.Clone();
        new Int4WeightQuantizer().Apply(quantized).ShouldBe(["g"]);
        GraphProto graph = quantized.Proto.Graph;
        graph.Node.Select(n => n.OpType).ShouldBe(["MatMulNBits", "Add"]);
        graph.Initializer.Select(i => i.Name).ShouldNotContain("B");
        graph.Initializer.Select(i => i.Name).ShouldNotContain("C");

        // Reference: x · (0.5 · dequantized Bᵀ) + 2 · C, the 0.5 already inside the stored scales.
        double[] w = Dequantize(graph, graph.Node[0]);
        double[] expected = MatMul(inputs["x"].Values.Select(v => (double)(float)v).ToArray(), w, 64, 24);
        for (int i = 0; i < expected.Length; i++)
        {
            expected[i] += 2 * c[i % 24];
        }
        double[] actual = ModelRunner.Run(quantized, inputs)["y"].Values;
        actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max().ShouldBeLessThan(1e-4);
        ModelRunner.Cosine(ModelRunner.Run(model, inputs), ModelRunner.Run(quantized, inputs)).ShouldBeGreaterThan(0.99);
    }
}
