using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Kiln.Optimize;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln optimize</c>: graph passes and int8 quantization of an ONNX model, baseline and result side by side.</summary>
internal static class OptimizeCommand
{
    private static readonly JsonSerializerOptions ReportJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "The .onnx model." };
        var output = new Option<string?>("--output", "-o") { Description = "Where to write the optimized model." };
        var quantize = new Option<string>("--quantize") { Description = "none, int8 (dynamic: int8 weights, activations quantized at run time), or int8-static (QDQ, activation ranges calibrated on --calibration DIR).", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int8", "int8-static");
        var calibration = new Option<string?>("--calibration") { Description = "int8-static: directory of calibration samples (a subfolder or .npz per sample with NAME.npy per input, or one .npy per sample for one-input models)." };
        var calibrationMethod = new Option<string>("--calibration-method") { Description = "int8-static: minmax, percentile (99.999 of |x|) or entropy (least KL divergence).", DefaultValueFactory = _ => "minmax" };
        calibrationMethod.AcceptOnlyFromAmong("minmax", "percentile", "entropy");
        var symmetric = new Option<bool>("--symmetric-activations") { Description = "int8-static: int8 symmetric activations instead of uint8 asymmetric." };
        var inputs = new Option<string?>("--inputs") { Description = "Directory of your inputs (same format as --calibration): the first is measured, all are compared to the baseline." };
        var perTensor = new Option<bool>("--per-tensor") { Description = "int8 weights with one scale per tensor instead of one per output column." };
        var budget = new Option<string?>("--budget") { Description = "Accuracy budget for int8, e.g. cosine=0.99: the worst nodes stay float until it holds." };
        var specialize = new Option<string?>("--specialize") { Description = "Fix scalar inputs to values, e.g. sr=16000 (comma-separated): branches they decide are folded away." };
        var shapes = new Option<string?>("--input-shape") { Description = "Shapes of the generated inputs, e.g. input=1x512,state=2x1x128 (symbolic dims are 1 otherwise)." };
        var report = new Option<string?>("--report") { Description = "Also write the report as JSON to this file." };
        var reportOnly = new Option<bool>("--report-only") { Description = "Measure the model; change nothing." };
        var threads = new Option<int>("--threads") { Description = "Intra-op threads for the latency measurements.", DefaultValueFactory = _ => 1 };
        var seconds = new Option<double>("--measure-seconds") { Description = "Seconds per latency measurement.", DefaultValueFactory = _ => 2 };
        var command = new Command("optimize", "Make an ONNX model faster: graph passes checked by running it, int8 quantization, a side-by-side report.")
        {
            model, output, quantize, perTensor, budget, specialize, shapes, report, reportOnly, threads, seconds, calibration, calibrationMethod, symmetric, inputs,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter stdout = parse.InvocationConfiguration.Output;
            TextWriter stderr = parse.InvocationConfiguration.Error;
            double? minimumCosine = null;
            if (parse.GetValue(budget) is { } text)
            {
                string[] parts = text.Split('=', 2);
                if (parts.Length != 2 || parts[0].Trim() != "cosine" || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value is <= 0 or > 1)
                {
                    await stderr.WriteLineAsync($"kiln optimize: --budget {text}: expected cosine=V with 0 < V ≤ 1 (the only metric so far)").ConfigureAwait(false);
                    return 2;
                }
                minimumCosine = value;
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
            string quantizeMode = parse.GetValue(quantize) ?? "none";
            if (quantizeMode == "int8-static" && !parse.GetValue(reportOnly) && string.IsNullOrEmpty(parse.GetValue(calibration)))
            {
                await stderr.WriteLineAsync("kiln optimize: --quantize int8-static needs --calibration DIR (sample inputs to calibrate the activation ranges on)").ConfigureAwait(false);
                return 2;
            }
            if (quantizeMode == "int8-static" && minimumCosine is not null)
            {
                await stderr.WriteLineAsync("kiln optimize: --budget works with --quantize int8 only so far").ConfigureAwait(false);
                return 2;
            }
            var options = new OptimizeOptions
            {
                InputShapes = inputShapes,
                Specialize = fixedInputs,
                ReportOnly = parse.GetValue(reportOnly),
                Quantize = quantizeMode switch { "int8" => QuantizeMode.DynamicInt8, "int8-static" => QuantizeMode.StaticInt8, _ => QuantizeMode.None },
                CalibrationDirectory = parse.GetValue(calibration),
                CalibrationMethod = Enum.Parse<Kiln.Optimize.Quantization.CalibrationMethod>(parse.GetValue(calibrationMethod) ?? "minmax", ignoreCase: true),
                SymmetricActivations = parse.GetValue(symmetric),
                InputsDirectory = parse.GetValue(inputs),
                PerChannel = !parse.GetValue(perTensor),
                MinimumCosine = minimumCosine,
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
                return 0;
            }
            catch (Exception ex) when (ex is OptimizeException or IOException or UnauthorizedAccessException)
            {
                await stderr.WriteLineAsync($"kiln optimize: {ex.Message}").ConfigureAwait(false);
                return 1;
            }
        });
        return command;
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
        foreach (StepOutcome step in report.Steps)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{(step.Kept ? "kept" : "rolled back"),-12} {step.Step}: {step.Detail}");
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
