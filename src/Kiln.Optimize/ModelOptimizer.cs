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
        List<Dictionary<string, TensorValue>>? userInputs = options.InputsDirectory is { } inputsDirectory ? SampleSet.Load(inputsDirectory, model) : null;
        List<Dictionary<string, TensorValue>>? calibration = null;
        if (options.Quantize == QuantizeMode.StaticInt8 && !options.ReportOnly)
        {
            calibration = SampleSet.Load(options.CalibrationDirectory ?? throw new OptimizeException($"{inputPath}: static int8 needs calibration samples (--calibration DIR)"), model);
        }
        // Static int8 without the user's inputs is measured on its first calibration sample: generated inputs lie outside the calibrated ranges.
        Dictionary<string, TensorValue> inputs = new(userInputs?[0] ?? calibration?[0] ?? ModelRunner.SampleInputs(model, shapes: options.InputShapes), StringComparer.Ordinal);
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

        if (options.Quantize == QuantizeMode.StaticInt8 && start.OpsetVersion < 13)
        {
            long from = start.OpsetVersion;
            start = ReferenceEquals(start, model) ? model.Clone() : start;
            int rewritten = new OpsetUpgrade().Apply(start);
            double moved = ModelRunner.MaxAbsDifference(reference, ModelRunner.Run(start, resultInputs));
            if (moved > 1e-4 * (1 + reference.Values.SelectMany(v => v.Values).Select(Math.Abs).DefaultIfEmpty(0).Max()))
            {
                throw new OptimizeException(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{inputPath}: the upgrade from opset {from} to 13 moved the outputs by {moved:G3}"));
            }
            steps.Add(new StepOutcome("opset-upgrade", true, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"opset {from} → 13, {rewritten} node(s) rewritten, outputs within {moved:G3}")));
        }

        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report("graph passes");
        // Gemm has no integer form here: when quantizing, MatMul + Add stay apart (ORT folds the bias into its fused int8 op).
        // Folding decides If conditions and inlining branches exposes more constants: three rounds of both.
        IGraphPass[] folding = [new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination(), new ConstantFolding(), new IfElimination()];
        // GELU chains into ORT's contrib ops (BiasGelu takes the bias Add before MatMul + Add pairs become Gemms) and copies
        // that change nothing. skip-layernorm-fusion and sibling-matmul-merge are not here: on MiniLM they measured slower
        // with ORT 1.31.1 on CPU (docs/optimize.md).
        // --extra-passes adds them (after the default fusions, in the order named).
        IGraphPass[] extra = [.. options.ExtraPasses.Select(OptionalPass)];
        // Self-attention into com.microsoft.Attention: in float, and before dynamic int8 (which makes it QAttention). Not
        // before fp16 (Attention stays float32 there, and its weights with it), static int8 or int4, which have no form
        // of it and would leave Q, K and V unquantized.
        IGraphPass[] attention = options.Quantize switch
        {
            QuantizeMode.None => [new AttentionFusion()],
            QuantizeMode.DynamicInt8 when (options.OpTypes ?? DynamicInt8Quantizer.DefaultOpTypes).Contains("Attention") => [new AttentionFusion()],
            _ => [],
        };
        IGraphPass[] fusions = [new GeluFusion(), .. attention, new ConcatSplitElimination(), .. extra];
        IGraphPass[] passes = options.Quantize is QuantizeMode.None or QuantizeMode.Float16
            ? [.. folding, new IdentityElimination(), .. fusions, new MatMulAddToGemm(), new ConvBatchNormFolding(), new DeadNodeElimination()]
            // Not gelu-fusion before quantizing: BiasGelu would take the bias Add that ORT otherwise folds into its fused
            // int8 MatMul; in the GPU host's onnxruntime 1.30 that model ran ~10 % behind quantize_dynamic's.
            : [.. folding, new IdentityElimination(), .. attention, new ConcatSplitElimination(), .. extra, new ConvBatchNormFolding(), new DeadNodeElimination()];
        (OnnxModel optimized, List<PassOutcome> outcomes) = new PassPipeline(passes).Run(start, resultInputs, reference);
        var reported = new HashSet<string>(StringComparer.Ordinal);
        foreach (PassOutcome o in outcomes.Where(o => reported.Add(o.Pass) || o.Changes > 0 || !o.Kept))
        {
            steps.Add(new StepOutcome(o.Pass, o.Kept, o.Kept ? $"{o.Changes} change(s), {o.NodesBefore} → {o.NodesAfter} nodes" : o.Reason ?? "rolled back"));
        }

        IReadOnlyList<KeptFloatNode> keptFloat = [];
        if (options.Quantize != QuantizeMode.None)
        {
            cancellationToken.ThrowIfCancellationRequested();
            IReadOnlyList<AccuracyBudgetSpec> budgets = options.AllBudgets;
            Dictionary<string, TensorRange>? ranges = null;
            List<IReadOnlyDictionary<string, TensorValue>>? calibrationSamples = null;
            if (options.Quantize == QuantizeMode.StaticInt8)
            {
                string method = options.CalibrationMethod.ToString().ToLowerInvariant();
                calibrationSamples = [.. calibration!.Select(s => Trimmed(s, resultInputs))];
                progress?.Report($"calibrating on {calibrationSamples.Count} sample(s) ({method})");
                ranges = new Calibrator(options.CalibrationMethod).Collect(optimized, StaticInt8Quantizer.TensorsToCalibrate(optimized), calibrationSamples, options.SymmetricActivations);
            }
            Func<ISet<string>, IQuantizer> quantizer = QuantizerFactory(options, ranges);
            string name = quantizer(new HashSet<string>()).Name;
            progress?.Report($"{name} quantization" + (budgets.Count > 0 ? $" within {string.Join(", ", budgets)}" : ""));
            if (budgets.Count > 0)
            {
                // The user's inputs, else the calibration samples (generated inputs lie outside calibrated ranges), else generated ones.
                IEnumerable<IReadOnlyDictionary<string, TensorValue>> more = userInputs is { Count: > 1 } ? userInputs.Skip(1).Select(u => Trimmed(u, resultInputs))
                    : calibrationSamples is not null ? calibrationSamples.Skip(1)
                    : Enumerable.Range(2, BudgetSamples - 1).Select(seed => SampleInputs(model, seed, options, resultInputs)).Where(sample => RunsOn(optimized, sample));
                IReadOnlyDictionary<string, TensorValue>[] samples = [resultInputs, .. more.Take(BudgetSamples - 1)];
                BudgetResult budget;
                try
                {
                    budget = new AccuracyBudget(budgets, quantizer).Quantize(optimized, samples, progress, cancellationToken);
                }
                catch (Exception e) when (e is KilnRuntimeException or OnnxRuntimeException)
                {
                    throw new OptimizeException($"{inputPath}: ONNX Runtime cannot run the {name} model: {e.Message}", e);
                }
                optimized = budget.Model;
                keptFloat = [.. budget.KeptFloat.Select(n => new KeptFloatNode(n, budget.NodeErrors[n].Cosine, budget.NodeErrors[n].Top1, budget.NodeErrors[n].MaxAbs))];
                string within = string.Join(", ", budgets);
                steps.Add(new StepOutcome(name, budget.Quantized.Count > 0,
                    budget.Quantized.Count == 0 && budget.KeptFloat.Count == 0 ? "0 node(s) quantized (no candidates)"
                    : budget.BudgetMet && budget.Quantized.Count > 0
                        ? $"{budget.Quantized.Count} node(s) quantized, {budget.KeptFloat.Count} kept float ({budget.Accuracy} on {samples.Length} samples; {within})"
                        : budget.BudgetMet
                            ? $"no quantized model meets {within} on {samples.Length} samples; the float model is kept"
                            : $"not even the float model meets {within}; the float model is kept"));
            }
            else
            {
                OnnxModel candidate = optimized.Clone();
                List<string> quantized = quantizer(new HashSet<string>()).Apply(candidate);
                optimized = candidate;
                steps.Add(new StepOutcome(name, quantized.Count > 0, $"{quantized.Count} node(s) quantized{options.Quantize switch
                {
                    QuantizeMode.DynamicInt8 => options.PerChannel ? " (per channel)" : " (per tensor)",
                    QuantizeMode.Int4 => $" (block {options.BlockSize}{(options.Int4Symmetric ? "" : ", asymmetric")}{(options.Int4AccuracyLevel != 0 ? $", accuracy level {options.Int4AccuracyLevel}" : "")})",
                    QuantizeMode.StaticInt8 => $", {(options.SymmetricActivations ? "int8 symmetric" : "uint8")} activations calibrated on {calibrationSamples!.Count} sample(s) ({options.CalibrationMethod.ToString().ToLowerInvariant()}){(userInputs is null ? "; accuracy below is on the first calibration sample" : "")}",
                    _ => "",
                }}"));
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report($"measuring the result ({optimized.TotalNodeCount} nodes)");
        ModelFigures result = Measure(optimized, resultInputs, reference, options);
        if (userInputs is { Count: > 1 })
        {
            progress?.Report($"comparing on {userInputs.Count} inputs");
            using InferenceSession baselineSession = ModelRunner.Open(model);
            using InferenceSession resultSession = ModelRunner.Open(optimized);
            var cosines = userInputs.Select(sample =>
            {
                Dictionary<string, TensorValue> full = new(sample, StringComparer.Ordinal);
                foreach (string name in options.Specialize.Keys)
                {
                    full[name] = inputs[name];
                }
                Dictionary<string, TensorValue> trimmed = Trimmed(full, resultInputs);
                return ModelRunner.Cosine(ModelRunner.RunSession(baselineSession, full), ModelRunner.RunSession(resultSession, trimmed));
            }).ToList();
            steps.Add(new StepOutcome("inputs", true, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"cosine to the baseline over {cosines.Count} inputs: mean {cosines.Average():F5}, min {cosines.Min():F5}")));
        }
        optimized.Save(outputPath!);
        return new OptimizationReport(inputPath, outputPath, baseline, result, steps, keptFloat);
    }

    /// <summary>The passes <c>--extra-passes</c> may name: not in the default pipeline (measured slower on MiniLM on CPU).</summary>
    public static IReadOnlyList<string> OptionalPassNames { get; } = ["skip-layernorm-fusion", "sibling-matmul-merge"];

    private static IGraphPass OptionalPass(string name) => name switch
    {
        "skip-layernorm-fusion" => new SkipLayerNormFusion(),
        "sibling-matmul-merge" => new SiblingMatMulMerge(),
        _ => throw new OptimizeException($"unknown pass '{name}'; the optional passes are {string.Join(", ", OptionalPassNames)}"),
    };

    /// <summary>Sample inputs the accuracy budget is checked on (the measuring inputs and generated ones).</summary>
    private const int BudgetSamples = 4;

    /// <summary>Makes the quantizer <paramref name="options"/> asks for, given the nodes to leave in float.</summary>
    private static Func<ISet<string>, IQuantizer> QuantizerFactory(OptimizeOptions options, IReadOnlyDictionary<string, TensorRange>? ranges) => options.Quantize switch
    {
        QuantizeMode.StaticInt8 => exclude => new StaticInt8Quantizer { Ranges = ranges!, SymmetricActivations = options.SymmetricActivations, PerChannel = options.PerChannel, Exclude = exclude },
        QuantizeMode.DynamicInt8 => exclude => new DynamicInt8Quantizer { PerChannel = options.PerChannel, GatherPerRow = options.GatherPerRow, OpTypes = options.OpTypes ?? DynamicInt8Quantizer.DefaultOpTypes, Exclude = exclude },
        QuantizeMode.Int4 => exclude => new Int4WeightQuantizer { BlockSize = options.BlockSize, Symmetric = options.Int4Symmetric, AccuracyLevel = options.Int4AccuracyLevel, OpTypes = options.OpTypes ?? Int4WeightQuantizer.DefaultOpTypes, Exclude = exclude },
        QuantizeMode.Float16 => exclude => new Float16Converter { KeepFloat32OpTypes = options.KeepFloat32OpTypes, Exclude = exclude },
        _ => throw new OptimizeException($"no quantizer for {options.Quantize}"),
    };

    /// <summary>
    /// Whether the model runs on generated inputs: values in their generic ranges can be out of a model's domain (token
    /// type ids of 3 for a model with two); such samples are left out of the budget's samples.
    /// </summary>
    private static bool RunsOn(OnnxModel model, IReadOnlyDictionary<string, TensorValue> sample)
    {
        try
        {
            _ = ModelRunner.Run(model, sample);
            return true;
        }
        catch (OnnxRuntimeException)
        {
            return false;
        }
    }

    /// <summary>The inputs of <paramref name="sample"/> that <paramref name="like"/> has (specialized inputs left out).</summary>
    private static Dictionary<string, TensorValue> Trimmed(IReadOnlyDictionary<string, TensorValue> sample, Dictionary<string, TensorValue> like) =>
        sample.Where(i => like.ContainsKey(i.Key)).ToDictionary(i => i.Key, i => i.Value, StringComparer.Ordinal);

    /// <summary>Generated inputs with another seed, the specialized inputs left out (as in <paramref name="like"/>).</summary>
    private static Dictionary<string, TensorValue> SampleInputs(OnnxModel model, int seed, OptimizeOptions options, Dictionary<string, TensorValue> like) =>
        Trimmed(ModelRunner.SampleInputs(model, seed, options.InputShapes), like);

    private static ModelFigures Measure(OnnxModel model, Dictionary<string, TensorValue> inputs, Dictionary<string, TensorValue> reference, OptimizeOptions options)
    {
        Dictionary<string, TensorValue> outputs = ModelRunner.Run(model, inputs);
        double maxAbs = ModelRunner.MaxAbsDifference(reference, outputs);
        double cosine = ModelRunner.Cosine(reference, outputs);
        (double? top1, double? top5) = (null, null);
        string first = model.Proto.Graph.Output.Count > 0 ? model.Proto.Graph.Output[0].Name : "";
        if (reference.TryGetValue(first, out TensorValue? classes) && AccuracyMetrics.LooksLikeClasses(classes) && outputs.TryGetValue(first, out TensorValue? actual))
        {
            top1 = Agreement(AccuracyMetrics.TopKAgreement(classes, actual, 1));
            top5 = classes.Shape[1] > 5 ? Agreement(AccuracyMetrics.TopKAgreement(classes, actual, 5)) : null;
        }
        // ModelRunner.Open goes through a file with external data for a model over protobuf's 2 GB.
        using InferenceSession session = ModelRunner.Open(model, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpThreads = options.Threads, InterOpThreads = 1 });
        long size = model.InitializerBytes < OnnxSaveOptions.ProtobufLimit ? model.Proto.CalculateSize() : model.InitializerBytes;
        (double p50, double p99) = Latency(session, inputs, options.MeasureTime);
        double? p50Batch32 = null;
        if (Batched(model, inputs, 32) is { } batch)
        {
            p50Batch32 = Latency(session, batch, options.MeasureTime).P50;
        }
        return new ModelFigures(size, model.TotalNodeCount, p50, p99, p50Batch32, 1000 / p50, maxAbs, cosine, top1, top5);

        static double Agreement((long Agreeing, long Rows) counts) => counts.Rows == 0 ? 1 : (double)counts.Agreeing / counts.Rows;
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
