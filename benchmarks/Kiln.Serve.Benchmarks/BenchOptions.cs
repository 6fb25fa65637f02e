using System.Globalization;

namespace Kiln.Serve.Benchmarks;

/// <summary>Command-line options; every loop the benchmark runs is bounded by <see cref="Seconds"/> and <see cref="MaxRequests"/>.</summary>
internal sealed record BenchOptions
{
    public const string Usage = """
        usage: Kiln.Serve.Benchmarks [--model tiny|resnet18|torchscript] [options]
          --model M               tiny (linear ONNX, JSON body), resnet18 (ResNet-18 ONNX, [1,3,224,224] .npy body),
                                  torchscript (a TorchScript .pt given by --pt, [1,3,224,224] .npy body). Default: tiny
          --pt PATH               the .pt for --model torchscript (input [N,3,224,224] float32)
          --onnx PATH             another ResNet18.onnx for --model resnet18 (default: the one copied next to this program)
          --input-shape A,B,...   one request's tensor shape for torchscript (default 1,3,224,224)
          --device cpu|cuda       where the TorchScript model runs, server and ceiling alike (default: cuda when available)
          --concurrency 1,2,...   closed-loop client counts (default 1,2,4,8,16,32,64)
          --batch-size 1,8        server batch_size values; each is a separately registered model (default 1,8)
          --max-batch-delay-ms N  server max_batch_delay (default 5)
          --workers N             server workers per model = in-process ceiling threads (default: logical cores)
          --intra-op-threads N    ONNX Runtime intra-op threads per session, server and ceiling alike (default 1)
          --warmup S              seconds of warm-up before each measurement (default 1)
          --seconds S             seconds each measurement runs (default 4)
          --max-requests N        most requests per concurrency level, warm-up included (default 2000000)
          --body json|npy         request body encoding (default: json for tiny, npy otherwise)
          --json OUT              also write the results as JSON to OUT
        """;

    public string Model { get; init; } = "tiny";

    public string? PtPath { get; init; }

    public string? OnnxPath { get; init; }

    public long[] InputShape { get; init; } = [1, 3, 224, 224];

    public string? Device { get; init; }

    public int[] Concurrency { get; init; } = [1, 2, 4, 8, 16, 32, 64];

    public int[] BatchSizes { get; init; } = [1, 8];

    public int MaxBatchDelayMs { get; init; } = 5;

    public int Workers { get; init; } = Environment.ProcessorCount;

    public int IntraOpThreads { get; init; } = 1;

    public double WarmupSeconds { get; init; } = 1;

    public double Seconds { get; init; } = 4;

    public long MaxRequests { get; init; } = 2_000_000;

    public string? Body { get; init; }

    public string? JsonPath { get; init; }

    public static BenchOptions Parse(string[] args)
    {
        var options = new BenchOptions();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{name} needs a value.");
            options = name switch
            {
                "--model" => options with { Model = Value() },
                "--pt" => options with { PtPath = Value() },
                "--onnx" => options with { OnnxPath = Value() },
                "--input-shape" => options with { InputShape = [.. List(Value(), name).Select(v => (long)v)] },
                "--device" => options with { Device = Value() },
                "--concurrency" => options with { Concurrency = List(Value(), name) },
                "--batch-size" => options with { BatchSizes = List(Value(), name) },
                "--max-batch-delay-ms" => options with { MaxBatchDelayMs = Int(Value(), name, min: 0) },
                "--workers" => options with { Workers = Int(Value(), name, min: 1) },
                "--intra-op-threads" => options with { IntraOpThreads = Int(Value(), name, min: 0) },
                "--warmup" => options with { WarmupSeconds = ParseSeconds(Value(), name, min: 0) },
                "--seconds" => options with { Seconds = ParseSeconds(Value(), name, min: 0.1) },
                "--max-requests" => options with { MaxRequests = long.Parse(Value(), CultureInfo.InvariantCulture) },
                "--body" => options with { Body = Value() },
                "--json" => options with { JsonPath = Value() },
                "-h" or "--help" => throw new ArgumentException(""),
                _ => throw new ArgumentException($"Unknown option {name}."),
            };
        }
        if (options.Model is not ("tiny" or "resnet18" or "torchscript"))
        {
            throw new ArgumentException($"--model {options.Model}: use tiny, resnet18 or torchscript.");
        }
        if (options.Model == "torchscript" && options.PtPath is null)
        {
            throw new ArgumentException("--model torchscript needs --pt PATH (a TorchScript file, e.g. from benchmarks/serve/resnet50_torchscript.py).");
        }
        if (options.Body is not (null or "json" or "npy"))
        {
            throw new ArgumentException($"--body {options.Body}: use json or npy.");
        }
        if (options.Device is not (null or "cpu" or "cuda"))
        {
            throw new ArgumentException($"--device {options.Device}: use cpu or cuda.");
        }
        if (options.MaxRequests < 1 || options.Concurrency.Max() > 4096)
        {
            throw new ArgumentException("--max-requests must be positive and --concurrency at most 4096.");
        }
        return options;
    }

    private static int[] List(string text, string name)
    {
        int[] values = [.. text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(v => Int(v, name, min: 1))];
        return values.Length > 0 ? values : throw new ArgumentException($"{name} needs at least one value.");
    }

    private static int Int(string text, string name, int min) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= min
            ? value
            : throw new ArgumentException($"{name} {text}: expected an integer of at least {min}.");

    private static double ParseSeconds(string text, string name, double min) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && value >= min && value <= 3600
            ? value
            : throw new ArgumentException($"{name} {text}: expected seconds between {min} and 3600.");
}
