using System.Diagnostics;
using Kiln.Optimize.Passes;
using Kiln.Optimize.Quantization;
using Kiln.Optimize.Verification;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize;

/// <summary>
/// <c>kiln optimize</c>'s engine: measures a model, runs the graph passes (each checked by ONNX Runtime and rolled back
/// when it changes the outputs or is rejected), optionally quantizes, measures the result the same way, writes it.
/// </summary>
public static class ModelOptimizer
{
    /// <summary>Optimizes <paramref name="inputPath"/> into <paramref name="outputPath"/> and reports both side by side.</summary>
    /// <param name="inputPath">The <c>.onnx</c> model.</param>
    /// <param name="outputPath">Where to write the result; ignored with <see cref="OptimizeOptions.ReportOnly"/>.</param>
    /// <param name="options">What to do.</param>
    /// <param name="progress">Receives one line per stage (long runs).</param>
    /// <param name="cancellationToken">Stops between stages.</param>
    /// <returns>The report.</returns>
    /// <exception cref="OptimizeException">The input is not an ONNX model, ONNX Runtime cannot run it, or quantization is impossible (opset).</exception>
    public static OptimizationReport Run(string inputPath, string? outputPath, OptimizeOptions options, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        OnnxModel model = OnnxModel.Load(inputPath);
        if (!options.ReportOnly && string.IsNullOrEmpty(outputPath))
        {
            throw new OptimizeException("no output file: give -o OUT.onnx, or --report-only");
        }
        Dictionary<string, TensorValue> inputs = ModelRunner.SampleInputs(model, shapes: options.InputShapes);
        foreach ((string name, double value) in options.Specialize)
        {
            TensorValue sample = inputs.TryGetValue(name, out TensorValue? existing) ? existing
                : throw new OptimizeException($"{inputPath}: cannot specialize '{name}': the model's inputs are {string.Join(", ", inputs.Keys)}");
            inputs[name] = sample with { Shape = [], Values = [value] };
        }
        Dictionary<string, TensorValue> reference;
        try
        {
            reference = ModelRunner.Run(model, inputs);
        }
        catch (Exception e) when (e is KilnRuntimeException or OnnxRuntimeException)
        {
            throw new OptimizeException($"{inputPath}: ONNX Runtime cannot run it: {e.Message}", e);
        }
        progress?.Report($"measuring {inputPath} ({model.TotalNodeCount} nodes)");
        ModelFigures baseline = Measure(model, inputs, reference, options);
        if (options.ReportOnly)
        {
            return new OptimizationReport(inputPath, null, baseline, baseline, []);
        }

        OnnxModel start = model;
        var steps = new List<StepOutcome>();
        Dictionary<string, TensorValue> resultInputs = inputs;
        if (options.Specialize.Count > 0)
        {
            // Not checked against the reference on its own: it changes the model's inputs; the final comparison covers it.
            var fixedValues = options.Specialize.Keys.ToDictionary(n => n, n => inputs[n], StringComparer.Ordinal);
            start = model.Clone();
            new InputSpecialization(fixedValues).Apply(start.Proto);
            resultInputs = inputs.Where(i => !fixedValues.ContainsKey(i.Key)).ToDictionary(i => i.Key, i => i.Value, StringComparer.Ordinal);
            steps.Add(new StepOutcome("specialize", true, string.Join(", ", options.Specialize.Select(p => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{p.Key}={p.Value}")))));
        }

        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report("graph passes");
        // Gemm has no integer form here: when quantizing, MatMul + Add stay apart (ORT folds the bias into its fused int8 op).
        // Folding decides If conditions and inlining branches exposes more constants: three rounds of both.
        IGraphPass[] folding = [new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination()];
        // GELU chains into ORT's contrib ops (BiasGelu takes the bias Add before MatMul + Add pairs become Gemms) and copies
        // that change nothing. skip-layernorm-fusion and sibling-matmul-merge are not here: on MiniLM they measured slower
        // with ORT 1.31.1 on CPU (docs/optimize.md).
        IGraphPass[] fusions = [new GeluFusion(), new ConcatSplitElimination()];
        IGraphPass[] passes = options.Quantize == QuantizeMode.None
            ? [.. folding, new IdentityElimination(), .. fusions, new MatMulAddToGemm(), new ConvBatchNormFolding(), new DeadNodeElimination()]
            : [.. folding, new IdentityElimination(), .. fusions, new ConvBatchNormFolding(), new DeadNodeElimination()];
        (OnnxModel optimized, List<PassOutcome> outcomes) = new PassPipeline(passes).Run(start, resultInputs, reference);
        var reported = new HashSet<string>(StringComparer.Ordinal);
        foreach (PassOutcome o in outcomes.Where(o => reported.Add(o.Pass) || o.Changes > 0 || !o.Kept))
        {
            steps.Add(new StepOutcome(o.Pass, o.Kept, o.Kept ? $"{o.Changes} change(s), {o.NodesBefore} → {o.NodesAfter} nodes" : o.Reason ?? "rolled back"));
        }

        if (options.Quantize == QuantizeMode.DynamicInt8)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report("int8 quantization" + (options.MinimumCosine is { } c ? $" within cosine ≥ {c}" : ""));
            if (options.MinimumCosine is { } minimum)
            {
                BudgetResult budget = new AccuracyBudget(minimum, options.PerChannel).Quantize(optimized, [resultInputs]);
                optimized = budget.Model;
                steps.Add(new StepOutcome("int8", budget.Quantized.Count > 0,
                    budget.BudgetMet
                        ? $"{budget.Quantized.Count} MatMul(s) quantized, {budget.KeptFloat.Count} kept float for cosine {budget.Cosine:F5} ≥ {minimum}"
                        : $"no quantized model meets cosine ≥ {minimum}; the float model is kept"));
            }
            else
            {
                OnnxModel candidate = optimized.Clone();
                List<string> quantized = new DynamicInt8Quantizer { PerChannel = options.PerChannel }.Apply(candidate);
                optimized = candidate;
                steps.Add(new StepOutcome("int8", quantized.Count > 0, $"{quantized.Count} MatMul(s) quantized ({(options.PerChannel ? "per channel" : "per tensor")})"));
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report($"measuring the result ({optimized.TotalNodeCount} nodes)");
        ModelFigures result = Measure(optimized, resultInputs, reference, options);
        optimized.Save(outputPath!);
        return new OptimizationReport(inputPath, outputPath, baseline, result, steps);
    }

    private static ModelFigures Measure(OnnxModel model, Dictionary<string, TensorValue> inputs, Dictionary<string, TensorValue> reference, OptimizeOptions options)
    {
        Dictionary<string, TensorValue> outputs = ModelRunner.Run(model, inputs);
        double maxAbs = ModelRunner.MaxAbsDifference(reference, outputs);
        double cosine = ModelRunner.Cosine(reference, outputs);
        // ModelRunner.Open goes through a file with external data for a model over protobuf's 2 GB.
        using InferenceSession session = ModelRunner.Open(model, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpThreads = options.Threads, InterOpThreads = 1 });
        long size = model.InitializerBytes < OnnxSaveOptions.ProtobufLimit ? model.Proto.CalculateSize() : model.InitializerBytes;
        (double p50, double p99) = Latency(session, inputs, options.MeasureTime);
        double? p50Batch32 = null;
        if (Batched(model, inputs, 32) is { } batch)
        {
            p50Batch32 = Latency(session, batch, options.MeasureTime).P50;
        }
        return new ModelFigures(size, model.TotalNodeCount, p50, p99, p50Batch32, 1000 / p50, maxAbs, cosine);
    }

    /// <summary>The inputs with their first dimension set to <paramref name="batch"/>, where every input declares it symbolic.</summary>
    private static Dictionary<string, TensorValue>? Batched(OnnxModel model, Dictionary<string, TensorValue> inputs, int batch)
    {
        var result = new Dictionary<string, TensorValue>(StringComparer.Ordinal);
        foreach (Onnx.Proto.ValueInfoProto input in model.Proto.Graph.Input.Where(i => inputs.ContainsKey(i.Name)))
        {
            var dims = input.Type?.TensorType?.Shape?.Dim;
            if (dims is null || dims.Count == 0 || dims[0].HasDimValue)
            {
                return null;
            }
            TensorValue one = inputs[input.Name];
            long[] shape = [batch, .. one.Shape.Skip(1)];
            result[input.Name] = one with { Shape = shape, Values = [.. Enumerable.Repeat(one.Values, batch).SelectMany(v => v)] };
        }
        return result.Count > 0 ? result : null;
    }

    private static (double P50, double P99) Latency(InferenceSession session, Dictionary<string, TensorValue> inputs, TimeSpan budget)
    {
        var times = new List<double>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 3; i++)
        {
            _ = ModelRunner.RunSession(session, inputs);
        }
        clock.Restart();
        while ((clock.Elapsed < budget || times.Count < 10) && times.Count < 100_000)
        {
            long start = Stopwatch.GetTimestamp();
            _ = ModelRunner.RunSession(session, inputs);
            times.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        times.Sort();
        return (times[times.Count / 2], times[Math.Min(times.Count - 1, (int)(times.Count * 0.99))]);
    }
}
