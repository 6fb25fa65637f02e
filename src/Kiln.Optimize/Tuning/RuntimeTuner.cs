using System.Diagnostics;
using System.Globalization;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Tuning;

/// <summary>One model file to tune, and its precision as the report should name it.</summary>
/// <param name="ModelPath">The <c>.onnx</c> file.</param>
/// <param name="Precision">e.g. <c>fp32</c> or <c>int8</c>.</param>
public sealed record TuningVariant(string ModelPath, string Precision);

/// <summary>What <see cref="RuntimeTuner"/> searches and how long it measures; immutable once built.</summary>
public sealed class RuntimeTunerOptions
{
    /// <summary>How long each configuration runs (after two warm-up runs); at least one run is measured. Default 0.5 s.</summary>
    public TimeSpan TimePerConfig { get; init; } = TimeSpan.FromSeconds(0.5);

    /// <summary>
    /// The batch size: the first dimension of every input that declares it symbolic. Default 1. The tuning records the
    /// first input's first dimension as measured (a fixed batch dimension stays what the model declares).
    /// </summary>
    public int Batch { get; init; } = 1;

    /// <summary>Shapes of the generated inputs by input name (they override <see cref="Batch"/>).</summary>
    public IReadOnlyDictionary<string, long[]> InputShapes { get; init; } = new Dictionary<string, long[]>();

    /// <summary>Execution providers to try; null: those of this ONNX Runtime build that Kiln opens (CPU, CUDA).</summary>
    public IReadOnlyList<string>? Providers { get; init; }

    /// <summary>Intra-op thread counts to try; null: 1, 2, 4, … up to the cores, and the core count.</summary>
    public IReadOnlyList<int>? IntraOpThreads { get; init; }

    /// <summary>Graph optimization levels to try; null: basic, extended, all.</summary>
    public IReadOnlyList<GraphOptimizationLevel>? OptimizationLevels { get; init; }

    /// <summary>Try parallel execution (inter-op threads 1 and 2) besides sequential. Default true.</summary>
    public bool TryParallel { get; init; } = true;

    /// <summary>Clock for the tuning's <c>measured_at</c>. Default: the system clock.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}

/// <summary>One configuration measured.</summary>
/// <param name="Model">The model file's name.</param>
/// <param name="Precision">Its precision.</param>
/// <param name="Provider">The execution provider.</param>
/// <param name="OptimizationLevel">basic, extended or all.</param>
/// <param name="IntraOpThreads">Threads inside one operator.</param>
/// <param name="InterOpThreads">Threads across operators.</param>
/// <param name="ExecutionMode">sequential or parallel.</param>
/// <param name="P50Ms">Median latency, ms (NaN when it failed).</param>
/// <param name="P99Ms">99th percentile latency, ms.</param>
/// <param name="Runs">Runs measured.</param>
/// <param name="Error">Why the configuration could not run, or null.</param>
public sealed record TuningMeasurement(string Model, string Precision, string Provider, string OptimizationLevel, int IntraOpThreads, int InterOpThreads, string ExecutionMode,
    double P50Ms, double P99Ms, int Runs, string? Error = null);

/// <summary>Every configuration measured, and the fastest per model file.</summary>
/// <param name="Measurements">In the order measured.</param>
/// <param name="Best">The fastest configuration of each model file, by file path.</param>
public sealed record TuningReport(IReadOnlyList<TuningMeasurement> Measurements, IReadOnlyDictionary<string, OnnxTuning> Best)
{
    /// <summary>The fastest configuration over all model files.</summary>
    public OnnxTuning Fastest => Best.Values.MinBy(t => t.P50Ms)!;
}

/// <summary>
/// Finds the fastest ONNX Runtime settings for a model on this machine: every execution provider available ×
/// graph optimization level × intra-op threads × sequential or parallel execution (inter-op threads 1 and 2), each
/// run for a bounded time on generated inputs at a given batch size; the fastest by median latency (then p99, then
/// fewer threads) is the tuning to save beside the model (<see cref="OnnxTuning"/>).
/// </summary>
public static class RuntimeTuner
{
    private static readonly string[] s_kilnProviders = ["CPUExecutionProvider", "CUDAExecutionProvider"];

    /// <summary>Measures every configuration of every variant.</summary>
    /// <param name="variants">The model files (e.g. the fp32 and int8 versions of one model).</param>
    /// <param name="options">The search space and time per configuration.</param>
    /// <param name="progress">One line per configuration measured.</param>
    /// <param name="cancellationToken">Stops between runs.</param>
    /// <exception cref="OptimizeException">A file is not an ONNX model, or no configuration of a file could run.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    public static TuningReport Tune(IReadOnlyList<TuningVariant> variants, RuntimeTunerOptions options, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(variants);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfZero(variants.Count);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Batch, 1);
        var machine = OnnxTuningMachine.Current;
        IReadOnlyList<string> available = OnnxSessionFactory.AvailableProviders;
        string[] providers = [.. (options.Providers ?? s_kilnProviders).Where(available.Contains)];
        int[] intra = [.. options.IntraOpThreads ?? DefaultThreads(machine.Cores)];
        GraphOptimizationLevel[] levels = [.. options.OptimizationLevels ?? [GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_EXTENDED, GraphOptimizationLevel.ORT_ENABLE_ALL]];
        (bool Parallel, int Inter)[] modes = options.TryParallel ? [(false, 1), (true, 1), (true, 2)] : [(false, 1)];
        if (providers.Length == 0)
        {
            throw new OptimizeException($"none of the providers asked for ({string.Join(", ", options.Providers ?? [])}) is in this ONNX Runtime build ({string.Join(", ", available)})");
        }

        var measurements = new List<TuningMeasurement>();
        var best = new Dictionary<string, OnnxTuning>(StringComparer.Ordinal);
        int total = variants.Count * providers.Length * levels.Length * intra.Length * modes.Length, done = 0;
        foreach (TuningVariant variant in variants)
        {
            OnnxModel model = OnnxModel.Load(variant.ModelPath);
            Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, shapes: BatchShapes(model, options));
            string file = Path.GetFileName(variant.ModelPath);
            TuningMeasurement? fastest = null;
            foreach (string provider in providers)
            {
                foreach (GraphOptimizationLevel level in levels)
                {
                    foreach (int threads in intra)
                    {
                        foreach ((bool parallel, int inter) in modes)
                        {
                            cancellationToken.ThrowIfCancellationRequested();
                            var settings = new OnnxSessionOptions
                            {
                                Provider = provider == "CUDAExecutionProvider" ? OnnxProvider.Cuda : OnnxProvider.Cpu,
                                OptimizationLevel = level,
                                IntraOpThreads = threads,
                                InterOpThreads = inter,
                                ParallelExecution = parallel,
                            };
                            TuningMeasurement measured = Measure(variant, file, provider, settings, inputs, options.TimePerConfig, cancellationToken);
                            measurements.Add(measured);
                            done++;
                            progress?.Report(string.Create(CultureInfo.InvariantCulture,
                                $"{done}/{total} {file} {provider} {measured.OptimizationLevel} intra {threads} inter {inter} {measured.ExecutionMode}: {(measured.Error is null ? $"p50 {measured.P50Ms:F3} ms, p99 {measured.P99Ms:F3} ms ({measured.Runs} runs)" : measured.Error)}"));
                            if (measured.Error is null && (fastest is null || Faster(measured, fastest)))
                            {
                                fastest = measured;
                            }
                        }
                    }
                }
            }
            if (fastest is null)
            {
                throw new OptimizeException($"{variant.ModelPath}: no configuration ran: {measurements.Last(m => m.Model == file).Error}");
            }
            best[variant.ModelPath] = new OnnxTuning
            {
                Model = file,
                Precision = variant.Precision,
                ExecutionProvider = fastest.Provider,
                OptimizationLevel = levels.First(l => OnnxTuning.LevelName(l) == fastest.OptimizationLevel),
                IntraOpThreads = fastest.IntraOpThreads,
                InterOpThreads = fastest.InterOpThreads,
                ParallelExecution = fastest.ExecutionMode == "parallel",
                Batch = inputs.Values.FirstOrDefault()?.Shape is [long first, ..] ? (int)first : 1,
                P50Ms = fastest.P50Ms,
                P99Ms = fastest.P99Ms,
                Machine = machine,
                MeasuredAt = options.TimeProvider.GetUtcNow(),
            };
        }
        return new TuningReport(measurements, best);
    }

    /// <summary>1, 2, 4, … below the core count, and the core count.</summary>
    private static IEnumerable<int> DefaultThreads(int cores)
    {
        for (int n = 1; n < cores; n *= 2)
        {
            yield return n;
        }
        yield return Math.Max(1, cores);
    }

    private static bool Faster(TuningMeasurement a, TuningMeasurement b) =>
        a.P50Ms != b.P50Ms ? a.P50Ms < b.P50Ms
        : a.P99Ms != b.P99Ms ? a.P99Ms < b.P99Ms
        : a.IntraOpThreads + a.InterOpThreads < b.IntraOpThreads + b.InterOpThreads;

    /// <summary>The user's shapes, and for other inputs whose first dimension is symbolic: the batch, then declared dims (symbolic ones 1).</summary>
    private static Dictionary<string, long[]> BatchShapes(OnnxModel model, RuntimeTunerOptions options)
    {
        var shapes = new Dictionary<string, long[]>(options.InputShapes, StringComparer.Ordinal);
        foreach (ValueInfoProto input in model.Proto.Graph.Input)
        {
            var dims = input.Type?.TensorType?.Shape?.Dim;
            if (!shapes.ContainsKey(input.Name) && dims is { Count: > 0 } && !dims[0].HasDimValue)
            {
                shapes[input.Name] = [options.Batch, .. dims.Skip(1).Select(d => d.HasDimValue && d.DimValue > 0 ? d.DimValue : 1)];
            }
        }
        return shapes;
    }

    private static TuningMeasurement Measure(TuningVariant variant, string file, string provider, OnnxSessionOptions settings, Dictionary<string, TensorValue> inputs, TimeSpan budget, CancellationToken cancellationToken)
    {
        string level = OnnxTuning.LevelName(settings.OptimizationLevel), mode = settings.ParallelExecution ? "parallel" : "sequential";
        TuningMeasurement Failed(string error) => new(file, variant.Precision, provider, level, settings.IntraOpThreads, settings.InterOpThreads, mode, double.NaN, double.NaN, 0, error);
        InferenceSession session;
        try
        {
            session = OnnxSessionFactory.Open(variant.ModelPath, settings);
        }
        catch (KilnRuntimeException ex)
        {
            return Failed(ex.Message);
        }
        string[] names = [.. inputs.Keys];
        OrtValue[] values = [.. inputs.Values.Select(ModelRunner.ToOrtValue)];
        try
        {
            string[] outputs = [.. session.OutputNames];
            using var runOptions = new RunOptions();
            for (int i = 0; i < 2; i++)
            {
                session.Run(runOptions, names, values, outputs).Dispose();
            }
            var times = new List<double>();
            var clock = Stopwatch.StartNew();
            while ((clock.Elapsed < budget || times.Count == 0) && times.Count < 100_000)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long start = Stopwatch.GetTimestamp();
                session.Run(runOptions, names, values, outputs).Dispose();
                times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
            }
            times.Sort();
            return new TuningMeasurement(file, variant.Precision, provider, level, settings.IntraOpThreads, settings.InterOpThreads, mode,
                times[times.Count / 2], times[Math.Min(times.Count - 1, (int)(times.Count * 0.99))], times.Count);
        }
        catch (OnnxRuntimeException ex)
        {
            return Failed(ex.Message);
        }
        finally
        {
            foreach (OrtValue value in values)
            {
                value.Dispose();
            }
            session.Dispose();
        }
    }
}
