using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Runtime;

/// <summary>The machine a tuning was measured on.</summary>
/// <param name="Cpu">The CPU model name.</param>
/// <param name="Cores">Logical processors.</param>
/// <param name="OnnxRuntime">ONNX Runtime's version.</param>
public sealed record OnnxTuningMachine(string Cpu, int Cores, string OnnxRuntime)
{
    /// <summary>This machine.</summary>
    public static OnnxTuningMachine Current => new(DeviceCatalog.Current.Cpu.Name, DeviceCatalog.Current.CpuCores, OnnxSessionFactory.Version);
}

/// <summary>
/// The ONNX Runtime settings measured fastest for one model file (written by <c>kiln optimize --autotune</c> as
/// <c>MODEL.onnx.tuning.json</c> beside the model; Kiln.Serve applies it when it opens the model). Immutable.
/// </summary>
public sealed record OnnxTuning
{
    /// <summary>What a tuning file's name adds to its model's file name.</summary>
    public const string FileSuffix = ".tuning.json";

    private const string Format = "kiln.onnx-tuning/1";

    /// <summary>The model file's name (no folder) the settings were measured on.</summary>
    public required string Model { get; init; }

    /// <summary>The model file's precision as the tuner was told (<c>fp32</c>, <c>int8</c>, …). Default <c>fp32</c>.</summary>
    public string Precision { get; init; } = "fp32";

    /// <summary>The execution provider, ONNX Runtime's name (<c>CPUExecutionProvider</c>, <c>CUDAExecutionProvider</c>).</summary>
    public string ExecutionProvider { get; init; } = "CPUExecutionProvider";

    /// <summary>Graph optimizations applied when the session opens.</summary>
    public GraphOptimizationLevel OptimizationLevel { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;

    /// <summary>Threads inside one operator.</summary>
    public int IntraOpThreads { get; init; } = 1;

    /// <summary>Threads running independent operators (parallel execution only).</summary>
    public int InterOpThreads { get; init; } = 1;

    /// <summary>Independent operators run in parallel (ORT_PARALLEL) instead of one after another.</summary>
    public bool ParallelExecution { get; init; }

    /// <summary>The batch size measured.</summary>
    public int Batch { get; init; } = 1;

    /// <summary>Median latency measured with these settings, in milliseconds.</summary>
    public double P50Ms { get; init; }

    /// <summary>99th percentile latency measured, in milliseconds.</summary>
    public double P99Ms { get; init; }

    /// <summary>Where it was measured.</summary>
    public required OnnxTuningMachine Machine { get; init; }

    /// <summary>When it was measured, if known.</summary>
    public DateTimeOffset? MeasuredAt { get; init; }

    /// <summary>The tuning file that belongs beside <paramref name="modelPath"/>: <c>MODEL.onnx.tuning.json</c>.</summary>
    public static string PathFor(string modelPath) => modelPath + FileSuffix;

    /// <summary>The level's short name: <c>disabled</c>, <c>basic</c>, <c>extended</c> or <c>all</c>.</summary>
    public static string LevelName(GraphOptimizationLevel level) => level switch
    {
        GraphOptimizationLevel.ORT_DISABLE_ALL => "disabled",
        GraphOptimizationLevel.ORT_ENABLE_BASIC => "basic",
        GraphOptimizationLevel.ORT_ENABLE_EXTENDED => "extended",
        _ => "all",
    };

    /// <summary>The settings as session options for <see cref="OnnxSessionFactory"/> (CPU unless the provider is CUDA).</summary>
    public OnnxSessionOptions ToSessionOptions() => new()
    {
        Provider = ExecutionProvider == "CUDAExecutionProvider" ? OnnxProvider.Cuda : OnnxProvider.Cpu,
        OptimizationLevel = OptimizationLevel,
        IntraOpThreads = IntraOpThreads,
        InterOpThreads = InterOpThreads,
        ParallelExecution = ParallelExecution,
    };

    /// <summary>One line: provider, level, threads, mode and the latency measured.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{ExecutionProvider}, optimization {LevelName(OptimizationLevel)}, {IntraOpThreads} intra-op / {InterOpThreads} inter-op thread(s), {(ParallelExecution ? "parallel" : "sequential")}; {Precision} p50 {P50Ms:F3} ms at batch {Batch} on {Machine.Cpu} ({Machine.Cores} cores, ONNX Runtime {Machine.OnnxRuntime})");

    /// <summary>The tuning file beside <paramref name="modelPath"/>, or null when there is none.</summary>
    /// <exception cref="KilnRuntimeException">The file exists but is not a valid tuning file (the message names it).</exception>
    public static OnnxTuning? LoadBeside(string modelPath)
    {
        string path = PathFor(modelPath);
        return File.Exists(path) ? Load(path) : null;
    }

    /// <summary>Reads a tuning file.</summary>
    /// <exception cref="KilnRuntimeException">It is not a valid tuning file (the message names it and what is wrong).</exception>
    public static OnnxTuning Load(string path)
    {
        try
        {
            using JsonDocument json = JsonDocument.Parse(File.ReadAllBytes(path));
            JsonElement root = json.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("format", out JsonElement format) || format.GetString() != Format)
            {
                throw new KilnRuntimeException($"{path} is not a Kiln tuning file (expected \"format\": \"{Format}\")");
            }
            JsonElement machine = Required(root, "machine");
            return new OnnxTuning
            {
                Model = Required(root, "model").GetString()!,
                Precision = Required(root, "precision").GetString()!,
                ExecutionProvider = Required(root, "execution_provider").GetString()!,
                OptimizationLevel = Required(root, "graph_optimization_level").GetString() switch
                {
                    "disabled" => GraphOptimizationLevel.ORT_DISABLE_ALL,
                    "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
                    "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                    "all" => GraphOptimizationLevel.ORT_ENABLE_ALL,
                    string other => throw new KilnRuntimeException($"{path}: graph_optimization_level \"{other}\" is none of disabled, basic, extended, all"),
                    null => throw new KilnRuntimeException($"{path}: graph_optimization_level is null"),
                },
                IntraOpThreads = Threads(root, "intra_op_threads"),
                InterOpThreads = Threads(root, "inter_op_threads"),
                ParallelExecution = Required(root, "execution_mode").GetString() switch
                {
                    "sequential" => false,
                    "parallel" => true,
                    var other => throw new KilnRuntimeException($"{path}: execution_mode \"{other}\" is neither sequential nor parallel"),
                },
                Batch = Required(root, "batch").GetInt32(),
                P50Ms = Required(root, "p50_ms").GetDouble(),
                P99Ms = Required(root, "p99_ms").GetDouble(),
                Machine = new OnnxTuningMachine(Required(machine, "cpu").GetString()!, Required(machine, "cores").GetInt32(), Required(machine, "onnxruntime").GetString()!),
                MeasuredAt = root.TryGetProperty("measured_at", out JsonElement at) && at.ValueKind == JsonValueKind.String ? at.GetDateTimeOffset() : null,
            };
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException or IOException)
        {
            throw new KilnRuntimeException($"{path} is not a valid Kiln tuning file: {ex.Message}", ex);
        }

        JsonElement Required(JsonElement parent, string name) =>
            parent.TryGetProperty(name, out JsonElement value) && value.ValueKind != JsonValueKind.Null ? value
                : throw new KilnRuntimeException($"{path}: \"{name}\" is missing");

        int Threads(JsonElement parent, string name)
        {
            int value = Required(parent, name).GetInt32();
            return value >= 0 ? value : throw new KilnRuntimeException($"{path}: \"{name}\" is {value}; it must be 0 or more");
        }
    }

    /// <summary>Writes the tuning file (snake_case JSON) through a temporary file.</summary>
    public void Save(string path)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("format", Format);
            writer.WriteString("model", Model);
            writer.WriteString("precision", Precision);
            writer.WriteString("execution_provider", ExecutionProvider);
            writer.WriteString("graph_optimization_level", LevelName(OptimizationLevel));
            writer.WriteNumber("intra_op_threads", IntraOpThreads);
            writer.WriteNumber("inter_op_threads", InterOpThreads);
            writer.WriteString("execution_mode", ParallelExecution ? "parallel" : "sequential");
            writer.WriteNumber("batch", Batch);
            writer.WriteNumber("p50_ms", P50Ms);
            writer.WriteNumber("p99_ms", P99Ms);
            writer.WriteStartObject("machine");
            writer.WriteString("cpu", Machine.Cpu);
            writer.WriteNumber("cores", Machine.Cores);
            writer.WriteString("onnxruntime", Machine.OnnxRuntime);
            writer.WriteEndObject();
            if (MeasuredAt is { } at)
            {
                writer.WriteString("measured_at", at);
            }
            writer.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, buffer.ToArray());
        File.Move(temporary, path, overwrite: true);
    }
}
