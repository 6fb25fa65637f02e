using System.Text.Json;

namespace Kiln.Cli.Tests;

/// <summary><c>kiln optimize</c> on a real model shipped in a NuGet package (ResNet-18's preprocessing graph).</summary>
public sealed class OptimizeCommandTests : IDisposable
{
    private static readonly string PreprocessOnnx = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNetPrepOnnx", "ResNetPreprocess.onnx");
    private readonly string _folder = Directory.CreateTempSubdirectory("kiln-optimize-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Optimize_WritesTheModel_TheTable_AndTheJsonReport()
    {
        string result = Path.Combine(_folder, "out.onnx");
        string report = Path.Combine(_folder, "report.json");
        (int code, string output, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--report", report, "--measure-seconds", "0.2");
        code.ShouldBe(0, error);
        output.ShouldContain("p50 batch 1");
        output.ShouldContain("cosine");
        output.ShouldContain("kept         dead-node-elimination");
        output.ShouldContain($"wrote {result}");
        error.ShouldContain("optimize: measuring");
        Kiln.Optimize.OnnxModel.Load(result).NodeCount.ShouldBeGreaterThan(0);
        using JsonDocument json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
        JsonElement resultFigures = json.RootElement.GetProperty("result");
        resultFigures.GetProperty("cosine").GetDouble().ShouldBeGreaterThan(0.99999);
        resultFigures.GetProperty("p50_batch1_ms").GetDouble().ShouldBeGreaterThan(0);
        // Each pass once (its first round; later rounds only when they changed something).
        json.RootElement.GetProperty("steps").EnumerateArray().Select(s => s.GetProperty("step").GetString()).Distinct().ShouldBe(
            ["constant-folding", "if-elimination", "identity-elimination", "gelu-fusion", "attention-fusion", "concat-split-elimination", "matmul-add-to-gemm", "conv-batchnorm-folding", "dead-node-elimination"]);
    }

    [Fact]
    public async Task ExtraPasses_RunAfterTheDefaultFusions_InTheOrderNamed()
    {
        string result = Path.Combine(_folder, "extra.onnx");
        string report = Path.Combine(_folder, "extra.json");
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--report", report, "--measure-seconds", "0.1",
            "--extra-passes", "sibling-matmul-merge,skip-layernorm-fusion");
        code.ShouldBe(0, error);
        using JsonDocument json = JsonDocument.Parse(await File.ReadAllTextAsync(report));
        json.RootElement.GetProperty("steps").EnumerateArray().Select(s => s.GetProperty("step").GetString()).Distinct().ShouldBe(
            ["constant-folding", "if-elimination", "identity-elimination", "gelu-fusion", "attention-fusion", "concat-split-elimination", "sibling-matmul-merge", "skip-layernorm-fusion", "matmul-add-to-gemm", "conv-batchnorm-folding", "dead-node-elimination"]);
    }

    [Fact]
    public async Task Int8_OnAnOpset8Model_IsRefused_NamingTheOpset()
    {
        string result = Path.Combine(_folder, "int8.onnx");
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--quantize", "int8", "--measure-seconds", "0.1");
        code.ShouldBe(1);
        error.ShouldContain("opset 8");
        File.Exists(result).ShouldBeFalse();
    }

    [Fact]
    public async Task ReportOnly_ChangesNothing_AndNeedsNoOutput()
    {
        (int code, string output, string error) = await RunAsync("optimize", "--report-only", PreprocessOnnx, "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain("nodes");
        output.ShouldNotContain("wrote");
    }

    [Fact]
    public async Task Autotune_WithReportOnly_WritesTheTuningFileBesideTheModel_AndPrintsTheTable()
    {
        string copy = Path.Combine(_folder, "prep.onnx");
        File.Copy(PreprocessOnnx, copy);
        (int code, string output, string error) = await RunAsync("optimize", copy, "--report-only", "--measure-seconds", "0.05", "--autotune", "--autotune-seconds", "0.01");
        code.ShouldBe(0, error);
        string file = copy + ".tuning.json";
        output.ShouldContain("autotune at batch 1");
        output.ShouldContain($"wrote {file}");
        Kiln.Runtime.OnnxTuning tuning = Kiln.Runtime.OnnxTuning.Load(file);
        tuning.Model.ShouldBe("prep.onnx");
        tuning.Precision.ShouldBe("fp32");
        // The saved configuration is the table's first (fastest) row, marked.
        string first = output.Split('\n').First(l => l.StartsWith("* ", StringComparison.Ordinal) || l.StartsWith("  prep.onnx", StringComparison.Ordinal));
        first.ShouldStartWith("* prep.onnx");
        first.ShouldContain(Kiln.Runtime.OnnxTuning.LevelName(tuning.OptimizationLevel));
        error.ShouldContain("optimize: 1/");
    }

    [Fact]
    public async Task NotAnOnnxFile_ExitsOne_NamingIt()
    {
        string notes = Path.Combine(_folder, "notes.onnx");
        await File.WriteAllTextAsync(notes, "hello");
        (int code, _, string error) = await RunAsync("optimize", notes, "-o", Path.Combine(_folder, "x.onnx"));
        code.ShouldBe(1);
        error.ShouldContain(notes);
        error.ShouldContain("not an ONNX model");
    }

    /// <summary>A version 1 .npy of float32 values.</summary>
    private static void WriteNpy(string path, long[] shape, float[] values)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}), }}";
        header = header.PadRight(((10 + header.Length + 1 + 63) / 64 * 64) - 10 - 1) + "\n";
        using var stream = File.Create(path);
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0, (byte)header.Length, (byte)(header.Length >> 8)]);
        stream.Write(System.Text.Encoding.ASCII.GetBytes(header));
        stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    [Fact]
    public async Task Int8Static_UpgradesTheOpset8Model_Calibrates_AndWritesQdq()
    {
        string calibration = Path.Combine(_folder, "calibration");
        Directory.CreateDirectory(calibration);
        var random = new Random(1);
        for (int s = 0; s < 3; s++)
        {
            WriteNpy(Path.Combine(calibration, $"{s}.npy"), [1, 3, 224, 224], [.. Enumerable.Range(0, 3 * 224 * 224).Select(_ => (float)(random.NextDouble() * 255))]);
        }
        string result = Path.Combine(_folder, "static.onnx");
        (int code, string output, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--quantize", "int8-static", "--calibration", calibration,
            "--calibration-method", "entropy", "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain("kept         opset-upgrade: opset 8 → 13");
        output.ShouldContain("int8-static: 1 node(s) quantized"); // the Concat; Split and Sub stay float
        output.ShouldContain("(entropy)");
        Kiln.Optimize.OnnxModel written = Kiln.Optimize.OnnxModel.Load(result);
        written.OpsetVersion.ShouldBe(13);
        output.ShouldContain("cosine");
    }

    [Fact]
    public async Task Int8Static_WithoutCalibration_ExitsTwo_SayingWhatIsMissing()
    {
        string result = Path.Combine(_folder, "static.onnx");
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--quantize", "int8-static");
        code.ShouldBe(2);
        error.ShouldContain("--calibration DIR");
        File.Exists(result).ShouldBeFalse();
    }

    [Theory]
    [InlineData("--budget", "top5=0.99")]
    [InlineData("--budget", "cosine<=0.99")]
    [InlineData("--quantize", "int3")]
    [InlineData("--batch", "0")]
    [InlineData("--autotune-seconds", "-1")]
    [InlineData("--calibration-method", "mse")]
    [InlineData("--extra-passes", "sibling-matmul-merge,attention-fusion")]
    public async Task BadFlags_ExitTwo(string flag, string value)
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", Path.Combine(_folder, "x.onnx"), flag, value);
        code.ShouldBe(2);
        error.ShouldNotBeEmpty();
    }

    [Fact]
    public async Task NoOutput_WithoutReportOnly_IsAnError()
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx);
        code.ShouldBe(1);
        error.ShouldContain("-o OUT.onnx");
    }

    /// <summary>x[batch, 64] → MatMul(W 64×48) → y, written with Google.Protobuf's wire format (the ONNX classes are internal).</summary>
    private static string TinyMatMulModel(string folder)
    {
        static byte[] Message(Action<Google.Protobuf.CodedOutputStream> write)
        {
            using var buffer = new MemoryStream();
            var stream = new Google.Protobuf.CodedOutputStream(buffer);
            write(stream);
            stream.Flush();
            return buffer.ToArray();
        }
        static void Field(Google.Protobuf.CodedOutputStream s, int number, byte[] message)
        {
            s.WriteTag(number, Google.Protobuf.WireFormat.WireType.LengthDelimited);
            s.WriteBytes(Google.Protobuf.ByteString.CopyFrom(message));
        }
        static void Text(Google.Protobuf.CodedOutputStream s, int number, string value)
        {
            s.WriteTag(number, Google.Protobuf.WireFormat.WireType.LengthDelimited);
            s.WriteString(value);
        }
        static void Int(Google.Protobuf.CodedOutputStream s, int number, long value)
        {
            s.WriteTag(number, Google.Protobuf.WireFormat.WireType.Varint);
            s.WriteInt64(value);
        }
        // ValueInfoProto: name 1, type 2 → TypeProto.tensor_type 1 → elem_type 1, shape 2 → dim 1 (dim_value 1 | dim_param 2).
        static byte[] Value(string name, string batch, long width) => Message(v =>
        {
            Text(v, 1, name);
            Field(v, 2, Message(t => Field(t, 1, Message(tensor =>
            {
                Int(tensor, 1, 1);
                Field(tensor, 2, Message(shape =>
                {
                    Field(shape, 1, Message(d => Text(d, 2, batch)));
                    Field(shape, 1, Message(d => Int(d, 1, width)));
                }));
            }))));
        });
        var random = new Random(3);
        byte[] weights = [.. Enumerable.Range(0, 64 * 48).SelectMany(_ => BitConverter.GetBytes((float)(random.NextDouble() - 0.5)))];
        byte[] model = Message(m =>
        {
            Int(m, 1, 8); // ir_version
            Field(m, 8, Message(o => { Text(o, 1, ""); Int(o, 2, 17); })); // opset_import
            Field(m, 7, Message(g =>
            {
                Field(g, 1, Message(n => { Text(n, 1, "x"); Text(n, 1, "W"); Text(n, 2, "y"); Text(n, 3, "fc"); Text(n, 4, "MatMul"); }));
                Text(g, 2, "tiny");
                Field(g, 5, Message(t => { Int(t, 1, 64); Int(t, 1, 48); Int(t, 2, 1); Text(t, 8, "W"); t.WriteTag(9, Google.Protobuf.WireFormat.WireType.LengthDelimited); t.WriteBytes(Google.Protobuf.ByteString.CopyFrom(weights)); }));
                Field(g, 11, Value("x", "batch", 64));
                Field(g, 12, Value("y", "batch", 48));
            }));
        });
        string path = Path.Combine(folder, "tiny.onnx");
        File.WriteAllBytes(path, model);
        return path;
    }

    [Theory]
    [InlineData("int4", "32", "MatMulNBits", "int4: 1 node(s) quantized (block 32)")]
    [InlineData("int4", "16", "MatMulNBits", "int4: 1 node(s) quantized (block 16)")]
    [InlineData("fp16", "32", "tiny", "fp16: 1 node(s) quantized")]
    public async Task Int4AndFp16_WriteTheConvertedModel(string mode, string blockSize, string expectedText, string expectedStep)
    {
        string input = TinyMatMulModel(_folder);
        string result = Path.Combine(_folder, mode + ".onnx");
        (int code, string output, string error) = await RunAsync("optimize", input, "-o", result, "--quantize", mode, "--block-size", blockSize, "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain(expectedStep);
        byte[] written = await File.ReadAllBytesAsync(result);
        System.Text.Encoding.ASCII.GetString(written).ShouldContain(expectedText);
        written.Length.ShouldBeLessThan((int)(new FileInfo(input).Length * (mode == "int4" ? 0.3 : 0.6)));
        double cosine = double.Parse(output.Split('\n').Single(l => l.StartsWith("cosine", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[2], System.Globalization.CultureInfo.InvariantCulture);
        cosine.ShouldBeGreaterThan(mode == "int4" ? 0.99 : 0.9999);
    }

    [Fact]
    public async Task Fp16_OnTheResNetPreprocessing_HalvesTheFile()
    {
        string result = Path.Combine(_folder, "fp16.onnx");
        (int code, string output, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", result, "--quantize", "fp16", "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain("kept         fp16:");
        new FileInfo(result).Length.ShouldBeLessThan((long)(new FileInfo(PreprocessOnnx).Length * 0.55));
    }

    [Fact]
    public async Task Int4_Asymmetric_WithAnAccuracyLevel_WritesZeroPointsAndTheLevel()
    {
        string input = TinyMatMulModel(_folder);
        string result = Path.Combine(_folder, "int4-asymmetric.onnx");
        (int code, string output, string error) = await RunAsync("optimize", input, "-o", result, "--quantize", "int4", "--asymmetric", "--accuracy-level", "4", "--measure-seconds", "0.1");
        code.ShouldBe(0, error);
        output.ShouldContain("int4: 1 node(s) quantized (block 32, asymmetric, accuracy level 4)");
        string written = System.Text.Encoding.ASCII.GetString(await File.ReadAllBytesAsync(result));
        written.ShouldContain("accuracy_level");
        written.ShouldContain("_int4_zero_points");

        (code, _, error) = await RunAsync("optimize", input, "-o", result, "--quantize", "int4", "--accuracy-level", "5");
        code.ShouldBe(2);
        error.ShouldContain("--accuracy-level 5");
    }

    [Theory]
    [InlineData("Conv")]
    [InlineData("Attention")]
    public async Task Int4WithAnInt8OnlyOpType_ExitsTwo(string opType)
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", Path.Combine(_folder, "x.onnx"), "--quantize", "int4", "--op-types", "MatMul," + opType);
        code.ShouldBe(2);
        error.ShouldContain($"--op-types {opType}: int4 takes MatMul, Gemm and Gather");
    }

    [Theory]
    [InlineData("--block-size", "48")]
    [InlineData("--op-types", "MatMul,LSTM")]
    public async Task BadQuantizationFlags_ExitTwo(string flag, string value)
    {
        (int code, _, string error) = await RunAsync("optimize", PreprocessOnnx, "-o", Path.Combine(_folder, "x.onnx"), flag, value);
        code.ShouldBe(2);
        error.ShouldContain(value.Split(',')[^1]);
    }
}
