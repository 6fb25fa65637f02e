using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Kiln.Optimize;
using Kiln.Optimize.Tuning;
using Kiln.Runtime;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln optimize</c>: graph passes and int8 quantization of an ONNX model, baseline and result side by side.</summary>
internal static class OptimizeCommand
{
    private static readonly JsonSerializerOptions ReportJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "The .onnx model." };
        var output = new Option<string?>("--output", "-o") { Description = "Where to write the optimized model." };
        var quantize = new Option<string>("--quantize") { Description = "none; int8 (dynamic: int8 weights, activations quantized at run time); int4 (weight-only, MatMulNBits); fp16 (float16 weights and compute, for GPUs); int8-static (QDQ, activation ranges calibrated on --calibration DIR).", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int8", "int4", "fp16", "int8-static");
        var blockSize = new Option<int>("--block-size") { Description = "int4: values per quantization block (a power of two, at least 16; 32 or 128 usual).", DefaultValueFactory = _ => 32 };
        var asymmetric = new Option<bool>("--asymmetric") { Description = "int4: asymmetric blocks (a 4-bit zero point per block; a little more accurate, a larger file) instead of symmetric ones." };
        var accuracyLevel = new Option<int>("--accuracy-level") { Description = "int4: MatMulNBits' accuracy_level (0: ORT's default, float compute; 4: its CPU kernel quantizes activations to int8).", DefaultValueFactory = _ => 0 };
        var opTypes = new Option<string?>("--op-types") { Description = "int8: op types to quantize, comma-separated, from MatMul, Gemm, Gather, Conv, Attention (default MatMul,Gemm,Gather,Attention; Attention: self-attention fused and quantized as one QAttention); int4: from MatMul, Gemm, Gather (default MatMul,Gemm)." };
        var gatherPerRow = new Option<bool>("--gather-per-row") { Description = "int8: embedding tables with a scale per row instead of one per table (a little more accurate, a little slower)." };
        var extraPasses = new Option<string?>("--extra-passes") { Description = $"Optional graph passes to add, comma-separated: {string.Join(", ", ModelOptimizer.OptionalPassNames)} (off by default: slower on MiniLM on CPU)." };
        var keepFp32 = new Option<string?>("--keep-fp32") { Description = "fp16: op types to keep in float32 besides the built-in block list, comma-separated (e.g. Softmax)." };
        var calibration = new Option<string?>("--calibration") { Description = "int8-static: directory of calibration samples (a subfolder or .npz per sample with NAME.npy per input, or one .npy per sample for one-input models)." };
        var calibrationMethod = new Option<string>("--calibration-method") { Description = "int8-static: minmax, percentile (99.999 of |x|) or entropy (least KL divergence).", DefaultValueFactory = _ => "minmax" };
        calibrationMethod.AcceptOnlyFromAmong("minmax", "percentile", "entropy");
        var symmetric = new Option<bool>("--symmetric-activations") { Description = "int8-static: int8 symmetric activations instead of uint8 asymmetric." };
        var inputs = new Option<string?>("--inputs") { Description = "Directory of your inputs (same format as --calibration): the first is measured, all are compared to the baseline." };
        var perTensor = new Option<bool>("--per-tensor") { Description = "int8 weights with one scale per tensor instead of one per output column." };
        var budget = new Option<string[]>("--budget")
        {
            Description = "Accuracy budget for quantization: cosine=V, top1=V, maxabs=V (also cosine>=V, maxabs<=V); repeatable or comma-separated, all must hold. The worst nodes stay float until they do.",
        };
        var specialize = new Option<string?>("--specialize") { Description = "Fix scalar inputs to values, e.g. sr=16000 (comma-separated): branches they decide are folded away." };
        var shapes = new Option<string?>("--input-shape") { Description = "Shapes of the generated inputs, e.g. input=1x512,state=2x1x128 (symbolic dims are 1 otherwise)." };
        var report = new Option<string?>("--report") { Description = "Also write the report as JSON to this file." };
        var reportOnly = new Option<bool>("--report-only") { Description = "Measure the model; change nothing." };
        var threads = new Option<int>("--threads") { Description = "Intra-op threads for the latency measurements.", DefaultValueFactory = _ => 1 };
        var seconds = new Option<double>("--measure-seconds") { Description = "Seconds per latency measurement.", DefaultValueFactory = _ => 2 };
        var autotune = new Option<bool>("--autotune") { Description = "Also search ONNX Runtime settings (provider, optimization level, threads, execution mode) for the fastest; writes MODEL.onnx.tuning.json beside the result (beside MODEL with --report-only)." };
        var batch = new Option<int>("--batch") { Description = "Batch size for --autotune (the first dimension of inputs that declare it symbolic).", DefaultValueFactory = _ => 1 };
        var autotuneSeconds = new Option<double>("--autotune-seconds") { Description = "Seconds each --autotune configuration runs.", DefaultValueFactory = _ => 0.5 };
        var command = new Command("optimize", "Make an ONNX model faster: graph passes checked by running it, int8 quantization, a side-by-side report.")
        {
            model, output, quantize, perTensor, budget, specialize, shapes, report, reportOnly, threads, seconds, autotune, batch, autotuneSeconds, blockSize, asymmetric, accuracyLevel, opTypes, keepFp32, gatherPerRow, extraPasses, calibration, calibrationMethod, symmetric, inputs,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter stdout = parse.InvocationConfiguration.Output;
            TextWriter stderr = parse.InvocationConfiguration.Error;
            IReadOnlyList<AccuracyBudgetSpec> budgets;
            try
            {
                budgets = AccuracyBudgetSpec.ParseAll(parse.GetValue(budget) ?? []);
            }
            catch (FormatException ex)
            {
                await stderr.WriteLineAsync($"kiln optimize: --budget: {ex.Message}").ConfigureAwait(false);
                return 2;
            }
            if (parse.GetValue(batch) < 1 || !(parse.GetValue(autotuneSeconds) > 0))
            {
                await stderr.WriteLineAsync("kiln optimize: --batch must be at least 1 and --autotune-seconds above 0").ConfigureAwait(false);
                return 2;
            }
            var fixedInputs = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (string pair in (parse.GetValue(specialize) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                string[] parts = pair.Split('=', 2);
                if (parts.Length != 2 || parts[0].Length == 0 || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                {
                    await stderr.WriteLineAsync($"kiln optimize: --specialize {pair}: expected NAME=NUMBER").ConfigureAwait(false);
                    return 2;
                }
                fixedInputs[parts[0]] = value;
            }
            var inputShapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
            foreach (string pair in (parse.GetValue(shapes) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                string[] parts = pair.Split('=', 2);
                long[]? dims = parts.Length == 2 && parts[0].Length > 0
                    ? [.. parts[1].Split('x').Select(d => long.TryParse(d, NumberStyles.None, CultureInfo.InvariantCulture, out long n) && n > 0 ? n : -1)]
                    : null;
                if (dims is null || dims.Any(d => d < 0))
                {
                    await stderr.WriteLineAsync($"kiln optimize: --input-shape {pair}: expected NAME=D1xD2x… with positive dims").ConfigureAwait(false);
                    return 2;
                }
                inputShapes[parts[0]] = dims;
            }
            int block = parse.GetValue(blockSize);
            if (block < 16 || (block & (block - 1)) != 0)
            {
                await stderr.WriteLineAsync($"kiln optimize: --block-size {block}: expected a power of two, at least 16 (32 or 128)").ConfigureAwait(false);
                return 2;
            }
            int level = parse.GetValue(accuracyLevel);
            if (level is < 0 or > 4)
            {
                await stderr.WriteLineAsync($"kiln optimize: --accuracy-level {level}: expected 0 to 4").ConfigureAwait(false);
                return 2;
            }
            string[] types = (parse.GetValue(opTypes) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (types.FirstOrDefault(t => t is not ("MatMul" or "Gemm" or "Gather" or "Conv" or "Attention")) is { } unknownType)
            {
                await stderr.WriteLineAsync($"kiln optimize: --op-types {unknownType}: expected MatMul, Gemm, Gather, Conv or Attention").ConfigureAwait(false);
                return 2;
            }
            if (parse.GetValue(quantize) == "int4" && types.FirstOrDefault(t => t is "Conv" or "Attention") is { } notInt4)
            {
                await stderr.WriteLineAsync($"kiln optimize: --op-types {notInt4}: int4 takes MatMul, Gemm and Gather").ConfigureAwait(false);
                return 2;
            }
            string[] extra = (parse.GetValue(extraPasses) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (extra.FirstOrDefault(p => !ModelOptimizer.OptionalPassNames.Contains(p)) is { } unknownPass)
            {
                await stderr.WriteLineAsync($"kiln optimize: --extra-passes {unknownPass}: expected {string.Join(" or ", ModelOptimizer.OptionalPassNames)}").ConfigureAwait(false);
                return 2;
            }
            string quantizeMode = parse.GetValue(quantize) ?? "none";
            if (quantizeMode == "int8-static" && !parse.GetValue(reportOnly) && string.IsNullOrEmpty(parse.GetValue(calibration)))
            {
                await stderr.WriteLineAsync("kiln optimize: --quantize int8-static needs --calibration DIR (sample inputs to calibrate the activation ranges on)").ConfigureAwait(false);
                return 2;
            }
            var options = new OptimizeOptions
            {
                BlockSize = block,
                Int4Symmetric = !parse.GetValue(asymmetric),
                Int4AccuracyLevel = level,
                OpTypes = types.Length > 0 ? new HashSet<string>(types, StringComparer.Ordinal) : null,
                KeepFloat32OpTypes = new HashSet<string>((parse.GetValue(keepFp32) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), StringComparer.Ordinal),
                InputShapes = inputShapes,
                Specialize = fixedInputs,
                ReportOnly = parse.GetValue(reportOnly),
                Quantize = quantizeMode switch
                {
                    "int8" => QuantizeMode.DynamicInt8,
                    "int4" => QuantizeMode.Int4,
                    "fp16" => QuantizeMode.Float16,
                    "int8-static" => QuantizeMode.StaticInt8,
                    _ => QuantizeMode.None,
                },
                CalibrationDirectory = parse.GetValue(calibration),
                CalibrationMethod = Enum.Parse<Kiln.Optimize.Quantization.CalibrationMethod>(parse.GetValue(calibrationMethod) ?? "minmax", ignoreCase: true),
                SymmetricActivations = parse.GetValue(symmetric),
                InputsDirectory = parse.GetValue(inputs),
                PerChannel = !parse.GetValue(perTensor),
                GatherPerRow = parse.GetValue(gatherPerRow),
                ExtraPasses = extra,
                Budgets = budgets,
                Threads = parse.GetValue(threads),
                MeasureTime = TimeSpan.FromSeconds(parse.GetValue(seconds)),
            };
            try
            {
                var progress = new Progress<string>(line => stderr.WriteLine($"optimize: {line}"));
                OptimizationReport result = await Task.Run(() => ModelOptimizer.Run(parse.GetValue(model)!, parse.GetValue(output), options, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
                await stdout.WriteAsync(Format(result)).ConfigureAwait(false);
                if (parse.GetValue(report) is { } reportPath)
                {
                    await File.WriteAllTextAsync(reportPath, JsonSerializer.Serialize(result, ReportJson), cancellationToken).ConfigureAwait(false);
                }
                if (parse.GetValue(autotune))
                {
                    // The file to tune is the one written (or the input with --report-only); with quantization the float input is measured too.
                    string target = result.Output ?? result.Model;
                    string precision = options.Quantize == QuantizeMode.DynamicInt8 ? "int8" : "fp32";
                    TuningVariant[] variants = result.Output is not null && options.Quantize != QuantizeMode.None
                        ? [new TuningVariant(target, precision), new TuningVariant(result.Model, "fp32")]
                        : [new TuningVariant(target, precision)];
                    var tunerOptions = new RuntimeTunerOptions { Batch = parse.GetValue(batch), TimePerConfig = TimeSpan.FromSeconds(parse.GetValue(autotuneSeconds)), InputShapes = inputShapes };
                    TuningReport tuning = await Task.Run(() => RuntimeTuner.Tune(variants, tunerOptions, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
                    OnnxTuning chosen = tuning.Best[target];
                    string file = OnnxTuning.PathFor(target);
                    chosen.Save(file);
                    await stdout.WriteAsync(FormatTuning(tuning, chosen)).ConfigureAwait(false);
                    if (tuning.Fastest != chosen)
                    {
                        await stdout.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"note: {tuning.Fastest.Model} ({tuning.Fastest.Precision}) is faster here: p50 {tuning.Fastest.P50Ms:F3} ms against {chosen.P50Ms:F3} ms")).ConfigureAwait(false);
                    }
                    await stdout.WriteLineAsync($"wrote {file}").ConfigureAwait(false);
                }
                return 0;
            }
            catch (Exception ex) when (ex is OptimizeException or KilnRuntimeException or IOException or UnauthorizedAccessException)
            {
                await stderr.WriteLineAsync($"kiln optimize: {ex.Message}").ConfigureAwait(false);
                return 1;
            }
        });
        return command;
    }

    /// <summary>Every configuration the tuner measured, fastest first; the one saved is marked with <c>*</c>.</summary>
    internal static string FormatTuning(TuningReport tuning, OnnxTuning chosen)
    {
        var text = new System.Text.StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"autotune at batch {chosen.Batch} on {chosen.Machine.Cpu} ({chosen.Machine.Cores} cores, ONNX Runtime {chosen.Machine.OnnxRuntime})");
        text.AppendLine(CultureInfo.InvariantCulture, $"  {"model",-24} {"precision",-9} {"provider",-22} {"level",-9} {"intra",5} {"inter",5} {"mode",-10} {"p50 ms",9} {"p99 ms",9} {"runs",6}");
        foreach (TuningMeasurement m in tuning.Measurements.OrderBy(m => double.IsNaN(m.P50Ms) ? double.MaxValue : m.P50Ms).ThenBy(m => m.P99Ms).ThenBy(m => m.IntraOpThreads + m.InterOpThreads))
        {
            bool saved = m.Model == chosen.Model && m.Provider == chosen.ExecutionProvider && m.OptimizationLevel == OnnxTuning.LevelName(chosen.OptimizationLevel)
                && m.IntraOpThreads == chosen.IntraOpThreads && m.InterOpThreads == chosen.InterOpThreads && m.ExecutionMode == (chosen.ParallelExecution ? "parallel" : "sequential");
            string figures = m.Error is null ? string.Create(CultureInfo.InvariantCulture, $"{m.P50Ms,9:F3} {m.P99Ms,9:F3} {m.Runs,6}") : $"failed: {m.Error}";
            text.AppendLine(CultureInfo.InvariantCulture, $"{(saved ? "*" : " ")} {m.Model,-24} {m.Precision,-9} {m.Provider,-22} {m.OptimizationLevel,-9} {m.IntraOpThreads,5} {m.InterOpThreads,5} {m.ExecutionMode,-10} {figures}");
        }
        return text.ToString();
    }

    /// <summary>The report as a table: baseline, result and their ratio, then what each step did.</summary>
    internal static string Format(OptimizationReport report)
    {
        var text = new System.Text.StringBuilder();
        ModelFigures b = report.Baseline, r = report.Result;
        text.AppendLine(CultureInfo.InvariantCulture, $"{"",-18} {"baseline",14} {"result",14} {"ratio",10}");
        Row("file size", $"{b.FileBytes / 1e6:F2} MB", $"{r.FileBytes / 1e6:F2} MB", Ratio(r.FileBytes, b.FileBytes));
        Row("nodes", $"{b.Nodes}", $"{r.Nodes}", Ratio(r.Nodes, b.Nodes));
        Row("p50 batch 1", $"{b.P50Batch1Ms:F3} ms", $"{r.P50Batch1Ms:F3} ms", Ratio(b.P50Batch1Ms, r.P50Batch1Ms) + " faster");
        Row("p99 batch 1", $"{b.P99Batch1Ms:F3} ms", $"{r.P99Batch1Ms:F3} ms", Ratio(b.P99Batch1Ms, r.P99Batch1Ms) + " faster");
        if (b.P50Batch32Ms is { } b32 && r.P50Batch32Ms is { } r32)
        {
            Row("p50 batch 32", $"{b32:F3} ms", $"{r32:F3} ms", Ratio(b32, r32) + " faster");
        }
        else
        {
            Row("p50 batch 32", "n/a", "n/a", "(fixed batch)");
        }
        Row("runs/s batch 1", $"{b.ThroughputBatch1:F1}", $"{r.ThroughputBatch1:F1}", Ratio(r.ThroughputBatch1, b.ThroughputBatch1));
        Row("max abs error", $"{b.MaxAbsError:G3}", $"{r.MaxAbsError:G3}", "");
        Row("cosine", $"{b.Cosine:F5}", $"{r.Cosine:F5}", "");
        if (r.Top1Agreement is { } top1)
        {
            Row("top-1 agreement", $"{b.Top1Agreement ?? 1:P2}", $"{top1:P2}", "");
        }
        if (r.Top5Agreement is { } top5)
        {
            Row("top-5 agreement", $"{b.Top5Agreement ?? 1:P2}", $"{top5:P2}", "");
        }
        foreach (StepOutcome step in report.Steps)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{(step.Kept ? "kept" : "rolled back"),-12} {step.Step}: {step.Detail}");
        }
        foreach (KeptFloatNode node in report.KeptFloat ?? [])
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{"float",-12} {node.Node}: alone quantized, cosine {node.Cosine:F5}, top-1 {node.Top1Agreement:P1}, max abs {node.MaxAbsError:G3}");
        }
        if (report.Output is { } written)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"wrote {written}");
        }
        return text.ToString();

        void Row(string name, string baseline, string result, string ratio) =>
            text.AppendLine(CultureInfo.InvariantCulture, $"{name,-18} {baseline,14} {result,14} {ratio,10}");

        static string Ratio(double numerator, double denominator) =>
            denominator == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $"{numerator / denominator:F2}×");
    }
}
