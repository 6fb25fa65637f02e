using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Kiln.Data;
using Kiln.Data.Benchmarks;
using Kiln.Data.Imaging;
using Kiln.Data.Nodes;
using Kiln.Runtime;
using SkiaSharp;
using static TorchSharp.torch;

// Kiln.Data's JPEG benchmark. Modes (each prints one line per result):
//   decoders  --corpus DIR [--seconds S]            libjpeg-turbo vs SkiaSharp JPEG decode, SkiaSharp PNG decode, 1 thread
//   ceiling   --corpus DIR [--seconds S]            1 thread: decode + random-resized crop to 224 over the corpus in memory
//   pipeline  --corpus DIR --threads N [--seconds S] [--ceiling IMG/S] [--pytorch IMG/S]
//             tar shards -> decode + RRC 224 + flip + normalize -> [64,3,224,224] tensors, through a Kiln.Data graph
//   all       --corpus DIR --threads N [--pytorch IMG/S]   ceiling, then pipeline, in one process
//   overhead  [--items N]                          per-node cost of chains of 1/4/16 pass-through maps (sequential)
// Options: --dct-scaling (decode JPEGs reduced when the crop allows; changes pixels slightly), --seed N, --batch N.
var options = Options.Parse(args);
string machine = $"{Environment.ProcessorCount} cores, {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.FrameworkDescription}";
Console.WriteLine($"# machine: {machine}; JPEG decoder: {ImageDecoder.JpegBackend}; corpus: {options.Corpus}");

switch (options.Mode)
{
    case "decoders":
        Decoders(options);
        break;
    case "ceiling":
        Ceiling(options);
        break;
    case "resize":
        Resize(options);
        break;
    case "pipeline":
        Pipeline(options, options.CeilingRate);
        break;
    case "overhead":
        NodeOverhead.Run(options.Items, 5);
        break;
    case "all":
        double ceiling = Ceiling(options);
        Pipeline(options, ceiling);
        break;
    default:
        Console.Error.WriteLine("usage: Kiln.Data.Benchmarks decoders|ceiling|pipeline|all --corpus DIR [--threads N] [--seconds S] [--pytorch IMG/S] [--ceiling IMG/S] [--dct-scaling]");
        return 2;
}
return 0;

static void Decoders(Options options)
{
    List<(string Name, byte[] Data)> images = Corpus.LoadImages(options.Corpus);
    double pixels = 0;
    foreach ((string name, byte[] data) in images)
    {
        ImageHeader header = ImageDecoder.ReadHeader(data, name);
        pixels += (double)header.Width * header.Height;
    }
    double meanPixels = pixels / images.Count;
    Console.WriteLine($"# {images.Count} JPEGs, mean {images.Average(i => i.Data.Length) / 1024.0:F1} KiB, mean {meanPixels / 1e3:F0} kpixels");

    var turbo = Measure.Loop(images.Count, options.Seconds, i =>
    {
        using RgbImage image = ImageDecoder.Decode(images[i].Data, images[i].Name);
    });
    Report("decode-jpeg libjpeg-turbo (P/Invoke, RGB)", turbo.ImagesPerSecond, 1, $"{turbo.ImagesPerSecond * meanPixels / 1e6:F0} MP/s");
    var skia = Measure.Loop(images.Count, options.Seconds, i =>
    {
        using RgbImage image = SkiaImageDecoder.Decode(images[i].Data, images[i].Name, ImageFormat.Jpeg);
    });
    Report("decode-jpeg SkiaSharp (SKCodec RGBA + repack)", skia.ImagesPerSecond, 1, $"{skia.ImagesPerSecond * meanPixels / 1e6:F0} MP/s; libjpeg-turbo/SkiaSharp = {turbo.ImagesPerSecond / skia.ImagesPerSecond:F2}x");
    var skiaBitmap = Measure.Loop(images.Count, options.Seconds, i =>
    {
        using SKBitmap bitmap = SKBitmap.Decode(images[i].Data);
    });
    Report("decode-jpeg SkiaSharp (SKBitmap.Decode, RGBA only)", skiaBitmap.ImagesPerSecond, 1, $"{skiaBitmap.ImagesPerSecond * meanPixels / 1e6:F0} MP/s");
    foreach (int reduction in new[] { 2, 4 })
    {
        var scaled = Measure.Loop(images.Count, options.Seconds, i =>
        {
            using RgbImage image = ImageDecoder.Decode(images[i].Data, images[i].Name, reduction);
        });
        Report($"decode-jpeg libjpeg-turbo 1/{reduction} (DCT scaling)", scaled.ImagesPerSecond, 1, $"{scaled.ImagesPerSecond / turbo.ImagesPerSecond:F2}x full size");
    }

    // PNG: the first 200 corpus images re-encoded losslessly.
    var pngs = new List<byte[]>();
    foreach ((string name, byte[] data) in images.Take(200))
    {
        using RgbImage image = ImageDecoder.Decode(data, name);
        pngs.Add(EncodePng(image));
    }
    var png = Measure.Loop(pngs.Count, options.Seconds, i =>
    {
        using RgbImage image = ImageDecoder.Decode(pngs[i], "png");
    });
    Report("decode-png SkiaSharp (same images as PNG)", png.ImagesPerSecond, 1, $"mean {pngs.Average(p => p.Length) / 1024.0:F0} KiB");
}

static void Resize(Options options)
{
    // Decoded images in memory, then the random-resized crop alone: what the resize costs per image.
    var decoded = Corpus.LoadImages(options.Corpus).Take(200).Select(i => ImageDecoder.Decode(i.Data, i.Name)).ToList();
    var crop = new RandomResizedCrop(224, 224);
    var rrc = Measure.Loop(decoded.Count, options.Seconds, i =>
    {
        SampleRandom random = SampleRandom.ForSample(options.Seed, i);
        using RgbImage result = crop.Apply(decoded[i], ref random);
    });
    Report("random-resized-crop 224 alone (1 thread, decoded images in memory)", rrc.ImagesPerSecond, 1, $"{1e3 / rrc.ImagesPerSecond:F3} ms/image");
    var normalized = new float[3 * 224 * 224];
    using RgbImage sample = ImageTransforms.Resize(decoded[0], 224, 224);
    var normalize = Measure.Loop(decoded.Count, options.Seconds, i => ImageNormalizer.ImageNet.Normalize(sample, normalized));
    Report("normalize 224x224 to CHW float alone (1 thread)", normalize.ImagesPerSecond, 1, $"{1e3 / normalize.ImagesPerSecond:F3} ms/image");
    decoded.ForEach(d => d.Dispose());
}

static double Ceiling(Options options)
{
    List<(string Name, byte[] Data)> images = Corpus.LoadImages(options.Corpus);
    var transform = new ImageNetTrainTransform(options.Seed, options.DctScaling);
    var decode = Measure.Loop(images.Count, options.Seconds, i =>
    {
        using RgbImage image = ImageDecoder.Decode(images[i].Data, images[i].Name);
    });
    Report("decode only (1 thread)", decode.ImagesPerSecond, 1, "");
    var ceiling = Measure.Loop(images.Count, options.Seconds, i =>
    {
        using RgbImage crop = transform.DecodeAndCrop(images[i].Data, images[i].Name, (ulong)i, flip: false);
    });
    Report($"ceiling: decode + random-resized-crop {transform.Size} (1 thread{(options.DctScaling ? ", DCT scaling" : "")})", ceiling.ImagesPerSecond, 1, $"resize adds {1e3 / ceiling.ImagesPerSecond - 1e3 / decode.ImagesPerSecond:F3} ms/image");
    var floats = new float[transform.FloatsPerImage];
    var full = Measure.Loop(images.Count, options.Seconds, i => transform.Apply(images[i].Data, images[i].Name, (ulong)i, floats));
    Report("decode + RRC + flip + normalize (1 thread, no batching)", full.ImagesPerSecond, 1, $"{full.ImagesPerSecond / ceiling.ImagesPerSecond:P0} of ceiling");
    return ceiling.ImagesPerSecond;
}

static void Pipeline(Options options, double? ceiling)
{
    TorchRuntime.EnsureInitialized(TorchRuntimeOptions.FromEnvironment());
    CheckTensorBytesAreInPlace();
    var transform = new ImageNetTrainTransform(options.Seed, options.DctScaling);
    NodeRegistry registry = NodeRegistry.CreateDefault();
    registry.AddMap<Sample[], ImageBatch>("imagenet_train_batch", transform.Collate);
    string spec = new JsonObject
    {
        ["version"] = 1,
        ["output"] = "tensors",
        ["nodes"] = new JsonArray(
            Node("files", "files", null, new JsonObject { ["root"] = Path.GetFullPath(options.Corpus), ["patterns"] = new JsonArray("*.tar") }),
            Node("epochs", "cycle", "files", new JsonObject { ["times"] = 0 }),
            Node("samples", "webdataset", "epochs", null),
            Node("batches", "batch", "samples", new JsonObject { ["size"] = options.Batch, ["drop_last"] = true }),
            // One thread: the map runs on the consumer's thread (threads 0) rather than beside it.
            Node("tensors", "map", "batches", new JsonObject { ["fn"] = "imagenet_train_batch", ["threads"] = options.Threads == 1 ? 0 : options.Threads })),
    }.ToJsonString();
    DataGraph graph = DataGraph.Build(GraphSpec.Parse(spec, "jpeg-pipeline"), registry, "jpeg-pipeline");

    using var loader = new DataLoader<ImageBatch>(graph, new DataLoaderOptions { Seed = options.Seed });
    loader.StartEpoch(0);
    // Counting starts after the warm-up batches and at least a second (threads started, tiered JIT settled).
    var warmup = Stopwatch.StartNew();
    long images = 0;
    int batches = 0;
    Stopwatch? clock = null;
    TimeSpan cpuAtStart = TimeSpan.Zero, gcAtStart = TimeSpan.Zero;
    double collateAtStart = 0;
    while (batches < 1_000_000 && loader.TryNext(out ImageBatch batch))
    {
        using (batch)
        {
            if (batch.Images.shape[0] != options.Batch || batch.Images.shape[3] != 224)
            {
                throw new InvalidOperationException($"unexpected batch shape [{string.Join(", ", batch.Images.shape)}]");
            }
        }
        batches++;
        if (clock is null && batches >= options.WarmupBatches && warmup.Elapsed.TotalSeconds >= 1.0)
        {
            clock = Stopwatch.StartNew();
            cpuAtStart = Process.GetCurrentProcess().TotalProcessorTime;
            collateAtStart = transform.CollateSeconds;
            gcAtStart = GC.GetTotalPauseDuration();
        }
        else if (clock is not null)
        {
            images += options.Batch;
            if (clock.Elapsed.TotalSeconds >= options.Seconds)
            {
                break;
            }
        }
    }
    if (clock is null)
    {
        throw new InvalidOperationException("the pipeline ended before the warm-up batches");
    }
    double seconds = clock.Elapsed.TotalSeconds;
    double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpuAtStart).TotalSeconds;
    double rate = images / seconds;
    double collateSeconds = transform.CollateSeconds - collateAtStart;
    double gcSeconds = (GC.GetTotalPauseDuration() - gcAtStart).TotalSeconds;
    string extra = $"batches of {options.Batch}x3x224x224 float, {images} images in {seconds:F1} s, " +
        $"CPU {cpuSeconds / images * 1e3:F2} ms/image (in the transform {collateSeconds / images * 1e3:F2}), GC pauses {gcSeconds / seconds:P1} of the time";
    if (ceiling is { } c)
    {
        extra += $"; per core = {rate / options.Threads / c:P0} of the 1-thread ceiling ({c:F0} img/s)";
    }
    if (options.PyTorchRate is { } p)
    {
        extra += $"; {rate / p:F2}x PyTorch DataLoader ({p:F0} img/s)";
    }
    Report($"pipeline: Kiln.Data graph, tar shards -> decode + RRC + flip + normalize -> batch ({options.Threads} threads)", rate, options.Threads, extra);
}

static JsonObject Node(string id, string type, string? input, JsonObject? parameters)
{
    var node = new JsonObject { ["id"] = id, ["type"] = type };
    if (input is not null)
    {
        node["inputs"] = new JsonArray(input);
    }
    if (parameters is not null)
    {
        node["params"] = parameters;
    }
    return node;
}

static void CheckTensorBytesAreInPlace()
{
    // Collate writes through Tensor.bytes; make sure that span is the tensor's memory, not a copy.
    using Tensor probe = zeros([4], ScalarType.Float32);
    MemoryMarshal.Cast<byte, float>(probe.bytes)[2] = 5f;
    if (probe[2].item<float>() != 5f)
    {
        throw new InvalidOperationException("Tensor.bytes is a copy in this TorchSharp: batches would stay empty");
    }
}

static void Report(string what, double imagesPerSecond, int cores, string extra) =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{what}: {imagesPerSecond:F1} images/s, {imagesPerSecond / cores:F1} images/s/core{(extra.Length > 0 ? "; " + extra : "")}"));

static byte[] EncodePng(RgbImage image)
{
    using var bitmap = new SKBitmap(new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Opaque));
    Span<byte> rgba = bitmap.GetPixelSpan();
    ReadOnlySpan<byte> rgb = image.Pixels;
    for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
    {
        rgba[j] = rgb[i];
        rgba[j + 1] = rgb[i + 1];
        rgba[j + 2] = rgb[i + 2];
        rgba[j + 3] = 255;
    }
    using SKData data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
    return data.ToArray();
}

/// <summary>Command-line options.</summary>
internal sealed record Options(
    string Mode, string Corpus, int Threads, double Seconds, double? PyTorchRate, double? CeilingRate,
    bool DctScaling, ulong Seed, int Batch, int WarmupBatches, long Items)
{
    public static Options Parse(string[] args)
    {
        string mode = args.Length > 0 ? args[0] : "";
        string corpus = "/tmp/kiln-jpeg-corpus";
        int threads = Environment.ProcessorCount, batch = 64, warmup = 2;
        double seconds = 10;
        double? pytorch = null, ceiling = null;
        bool dct = false;
        ulong seed = 0;
        long items = 5_000_000;
        for (int i = 1; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--corpus": corpus = Value(); break;
                case "--threads": threads = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--seconds": seconds = double.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--pytorch": pytorch = double.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--ceiling": ceiling = double.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--dct-scaling": dct = true; break;
                case "--seed": seed = ulong.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--batch": batch = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = int.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--items": items = long.Parse(Value(), CultureInfo.InvariantCulture); break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }
        if (threads < 1 || batch < 1 || warmup < 1 || seconds <= 0)
        {
            throw new ArgumentException("--threads, --batch, --warmup and --seconds must be positive");
        }
        return new Options(mode, corpus, threads, seconds, pytorch, ceiling, dct, seed, batch, warmup, items);
    }
}
