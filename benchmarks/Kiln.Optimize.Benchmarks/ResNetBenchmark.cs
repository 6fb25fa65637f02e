using System.Diagnostics;
using System.Globalization;
using Kiln.Optimize.Passes;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SkiaSharp;

namespace Kiln.Optimize.Benchmarks;

/// <summary>
/// ResNet-18 (the Microsoft.ML.DnnImageFeaturizer.ResNet18 package, CNTK export, opset 8) in float32 against Kiln's
/// static int8 (opset upgrade, Conv+BatchNorm folding, calibration, QDQ), on crops of real photographs (the wallpapers
/// Debian ships under /usr/share/backgrounds and /usr/share/wallpapers): the images sorted by path alternate between a
/// calibration set and an evaluation set, so no evaluation image was seen in calibration. Crops: random squares of 40–100%
/// of the shorter side, resized to 224×224, run through the package's ResNetPreprocess.onnx (RGB→BGR, mean image).
/// Per calibration method: p50 of both models alternating (batch 1, all graph optimizations, the given intra-op threads),
/// the cosine of the 512-d features, file sizes, and the op types left in ONNX Runtime's optimized int8 graph.
///   usage: Kiln.Optimize.Benchmarks resnet [--threads 1] [--calibration-crops 96] [--eval-crops 128] [--rounds 2] [--methods minmax,percentile,entropy] [--symmetric false]
///          [--dump-ranges true] [--write-samples DIR (writes the crops as .npy under DIR/calibration and DIR/inputs, measures nothing)]
/// </summary>
internal static class ResNetBenchmark
{
    private const int Size = 224;

    private static readonly string[] ImageFolders = ["/usr/share/backgrounds", "/usr/share/wallpapers"];

    public static void Run(string[] args)
    {
        var flags = new Dictionary<string, string>
        {
            ["threads"] = "1", ["calibration-crops"] = "96", ["eval-crops"] = "128", ["rounds"] = "2", ["methods"] = "minmax,percentile,entropy", ["symmetric"] = "false",
        };
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            flags[args[i].TrimStart('-')] = args[i + 1];
        }
        int threads = int.Parse(flags["threads"], CultureInfo.InvariantCulture);
        int rounds = int.Parse(flags["rounds"], CultureInfo.InvariantCulture);
        string models = Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
        string floatPath = Path.Combine(models, "ResNet18Onnx", "ResNet18.onnx");
        string prepPath = Path.Combine(models, "ResNetPrepOnnx", "ResNetPreprocess.onnx");

        string[] images = [.. ImageFolders.Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories))
            .Where(f => f.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".webp", StringComparison.OrdinalIgnoreCase))
            .Where(f => !f.Contains("screenshot", StringComparison.OrdinalIgnoreCase) && new FileInfo(f).Length > 50_000)
            .Order(StringComparer.Ordinal)];
        string[] calibrationImages = [.. images.Where((_, i) => i % 2 == 0)];
        string[] evaluationImages = [.. images.Where((_, i) => i % 2 == 1)];
        var clock = Stopwatch.StartNew();
        using InferenceSession prep = new(prepPath);
        List<float[]> calibration = Crops(calibrationImages, int.Parse(flags["calibration-crops"], CultureInfo.InvariantCulture), 1, prep);
        List<float[]> evaluation = Crops(evaluationImages, int.Parse(flags["eval-crops"], CultureInfo.InvariantCulture), 2, prep);
        Console.Error.WriteLine($"{images.Length} images ({calibrationImages.Length} calibration, {evaluationImages.Length} evaluation), {calibration.Count} + {evaluation.Count} crops in {clock.Elapsed.TotalSeconds:F1} s");

        if (flags.GetValueOrDefault("write-samples") is { } samplesDir)
        {
            // For `kiln optimize --calibration DIR/calibration --inputs DIR/inputs`: one .npy per crop.
            foreach ((string set, List<float[]> crops) in new[] { ("calibration", calibration), ("inputs", evaluation) })
            {
                Directory.CreateDirectory(Path.Combine(samplesDir, set));
                for (int c = 0; c < crops.Count; c++)
                {
                    SampleSet.Write(Path.Combine(samplesDir, set, $"{c:D4}.npy"), new TensorValue(TensorElementType.Float, [1, 3, Size, Size], [.. crops[c].Select(v => (double)v)]));
                }
            }
            return;
        }

        string dir = Directory.CreateTempSubdirectory("kiln-resnet-").FullName;
        try
        {
            OnnxModel prepared = OnnxModel.Load(floatPath);
            new OpsetUpgrade().Apply(prepared);
            new ConvBatchNormFolding().Apply(prepared.Proto);
            new DeadNodeElimination().Apply(prepared.Proto);
            string input = prepared.Proto.Graph.Input[0].Name;
            IReadOnlyDictionary<string, TensorValue>[] samples = [.. calibration.Select(c => (IReadOnlyDictionary<string, TensorValue>)new Dictionary<string, TensorValue>
            {
                [input] = new(TensorElementType.Float, [1, 3, Size, Size], [.. c.Select(v => (double)v)]),
            })];
            List<string> tensors = StaticInt8Quantizer.TensorsToCalibrate(prepared);
            bool symmetric = flags["symmetric"] == "true";
            using InferenceSession fp32 = Open(floatPath, threads);
            foreach (string name in flags["methods"].Split(','))
            {
                CalibrationMethod method = Enum.Parse<CalibrationMethod>(name, ignoreCase: true);
                clock.Restart();
                Dictionary<string, TensorRange> ranges = new Calibrator(method).Collect(prepared, tensors, samples, symmetric);
                double calibrationSeconds = clock.Elapsed.TotalSeconds;
                if (flags.GetValueOrDefault("dump-ranges") == "true")
                {
                    Dictionary<string, TensorRange> seen = new Calibrator(CalibrationMethod.MinMax).Collect(prepared, tensors, samples, symmetric);
                    foreach (string tensor in tensors)
                    {
                        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{tensor}: {method} [{ranges[tensor].Min:G4}, {ranges[tensor].Max:G4}] of [{seen[tensor].Min:G4}, {seen[tensor].Max:G4}]"));
                    }
                }
                OnnxModel quantized = prepared.Clone();
                List<string> nodes = new StaticInt8Quantizer { Ranges = ranges, SymmetricActivations = symmetric }.Apply(quantized);
                string int8Path = Path.Combine(dir, $"resnet18-int8-{name}.onnx");
                quantized.Save(int8Path);
                string optimizedPath = Path.Combine(dir, $"resnet18-int8-{name}-ort.onnx");
                using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimizedPath, IntraOpNumThreads = 1 })
                using (var session = new InferenceSession(int8Path, options))
                {
                }
                string ops = string.Join(" ", OnnxModel.Load(optimizedPath).Proto.Graph.Node.GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).Select(g => $"{g.Key}×{g.Count()}"));
                using InferenceSession int8 = Open(int8Path, threads);
                (List<double> fp32Times, List<double> int8Times, double mean, double min) =
                    PairedRuns.Run(evaluation, rounds, crop => Features(fp32, crop), crop => Features(int8, crop));
                double p50f = PairedRuns.Percentile(fp32Times, 0.5), p50q = PairedRuns.Percentile(int8Times, 0.5);
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{{\"model\":\"ResNet-18\",\"method\":\"{name}\",\"symmetric\":{flags["symmetric"]},\"threads\":{threads},\"calibration_crops\":{calibration.Count},\"eval_crops\":{evaluation.Count},\"runs_each\":{fp32Times.Count},\"calibration_s\":{calibrationSeconds:F1},\"fp32_p50_ms\":{p50f:F3},\"int8_p50_ms\":{p50q:F3},\"speedup_p50\":{p50f / p50q:F2},\"fp32_bytes\":{new FileInfo(floatPath).Length},\"int8_bytes\":{new FileInfo(int8Path).Length},\"quantized_nodes\":{nodes.Count},\"cosine_mean\":{mean:F5},\"cosine_min\":{min:F5},\"ort_int8_ops\":\"{ops}\"}}"));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary><paramref name="count"/> preprocessed crops spread over the images (random squares, 224×224, 0–255 RGB through ResNetPreprocess.onnx).</summary>
    private static List<float[]> Crops(string[] images, int count, int seed, InferenceSession prep)
    {
        var random = new Random(seed);
        var crops = new List<float[]>(count);
        int perImage = Math.Max(1, (count + images.Length - 1) / images.Length);
        foreach (string path in images)
        {
            if (crops.Count >= count)
            {
                break;
            }
            using SKBitmap? decoded = SKBitmap.Decode(path);
            if (decoded is null)
            {
                continue;
            }
            for (int k = 0; k < perImage && crops.Count < count; k++)
            {
                int side = (int)(Math.Min(decoded.Width, decoded.Height) * (0.4 + (0.6 * random.NextDouble())));
                int left = random.Next(0, decoded.Width - side + 1), top = random.Next(0, decoded.Height - side + 1);
                using var subset = new SKBitmap();
                if (!decoded.ExtractSubset(subset, new SKRectI(left, top, left + side, top + side)))
                {
                    continue;
                }
                var info = new SKImageInfo(Size, Size, SKColorType.Rgba8888, SKAlphaType.Unpremul);
                using SKBitmap resized = subset.Resize(info, new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Linear));
                ReadOnlySpan<byte> rgba = resized.GetPixelSpan();
                var planar = new float[3 * Size * Size];
                for (int p = 0; p < Size * Size; p++)
                {
                    planar[p] = rgba[(p * 4) + 0];
                    planar[(Size * Size) + p] = rgba[(p * 4) + 1];
                    planar[(2 * Size * Size) + p] = rgba[(p * 4) + 2];
                }
                using OrtValue value = OrtValue.CreateTensorValueFromMemory(planar, [1, 3, Size, Size]);
                using var runOptions = new RunOptions();
                using IDisposableReadOnlyCollection<OrtValue> outputs = prep.Run(runOptions, [prep.InputNames[0]], [value], [prep.OutputNames[0]]);
                crops.Add(outputs[0].GetTensorDataAsSpan<float>().ToArray());
            }
        }
        return crops;
    }

    private static InferenceSession Open(string path, int threads)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads, InterOpNumThreads = 1 };
        return new InferenceSession(path, options);
    }

    private static (float[] Features, double Milliseconds) Features(InferenceSession session, float[] image)
    {
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(image, [1, 3, Size, Size]);
        using var runOptions = new RunOptions();
        long start = Stopwatch.GetTimestamp();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, [session.InputNames[0]], [input], [session.OutputNames[0]]);
        double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(), ms);
    }
}
