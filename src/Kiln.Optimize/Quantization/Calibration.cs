using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Optimize.Quantization;

/// <summary>How static quantization turns the values an activation took on the calibration samples into its range.</summary>
public enum CalibrationMethod
{
    /// <summary>The smallest and largest value seen.</summary>
    MinMax,

    /// <summary>Clips |x| at a high percentile (99.999 by default) of its histogram: rare outliers do not stretch the scale.</summary>
    Percentile,

    /// <summary>Clips |x| at the threshold whose quantized histogram is closest to the real one (least KL divergence), as TensorRT does.</summary>
    Entropy,
}

/// <summary>The float range an activation is quantized over.</summary>
internal readonly record struct TensorRange(float Min, float Max);

/// <summary>
/// Runs the float model in ONNX Runtime over calibration samples with every activation to quantize added as a graph
/// output, and turns what it sees into ranges. Memory stays bounded by one sample's activations: MinMax keeps two
/// numbers per tensor; Percentile and Entropy make a second pass that fills a histogram of the non-zero |x| per tensor
/// over [0, max|x|] (2048 bins) and pick a clipping threshold t from it; the range is then [max(min, −t), min(max, t)].
/// Graph outputs keep the range seen.
/// </summary>
internal sealed class Calibrator(CalibrationMethod method, double percentile = 99.999, int bins = 2048)
{
    /// <summary>The range of each of <paramref name="tensors"/> over <paramref name="samples"/>; <paramref name="symmetric"/>: the activations will be int8 symmetric (the entropy search then has 128 levels for |x|).</summary>
    /// <exception cref="OptimizeException">No samples, or ONNX Runtime cannot run the model on them (names the sample).</exception>
    public Dictionary<string, TensorRange> Collect(OnnxModel model, IReadOnlyCollection<string> tensors, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> samples, bool symmetric = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (samples.Count == 0)
        {
            throw new OptimizeException($"{model.Source}: calibration needs at least one sample");
        }
        OnnxModel augmented = model.Clone();
        var outputs = new HashSet<string>(augmented.Proto.Graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        foreach (string tensor in tensors.Where(t => !outputs.Contains(t)))
        {
            augmented.Proto.Graph.Output.Add(new ValueInfoProto
            {
                Name = tensor,
                Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } },
            });
        }
        string[] names = [.. tensors];
        var min = new float[names.Length];
        var max = new float[names.Length];
        Array.Fill(min, float.PositiveInfinity);
        Array.Fill(max, float.NegativeInfinity);
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, InterOpNumThreads = 1 };
        using var session = new InferenceSession(augmented.ToBytes(), options);
        Each(session, names, samples, model.Source, (t, values) =>
        {
            float lo = min[t], hi = max[t];
            foreach (float v in values)
            {
                lo = MathF.Min(lo, v);
                hi = MathF.Max(hi, v);
            }
            min[t] = lo;
            max[t] = hi;
        });
        var ranges = new Dictionary<string, TensorRange>(StringComparer.Ordinal);
        if (method == CalibrationMethod.MinMax)
        {
            for (int t = 0; t < names.Length; t++)
            {
                ranges[names[t]] = new TensorRange(min[t], max[t]);
            }
            return ranges;
        }
        var histograms = new long[names.Length][];
        var width = new double[names.Length];
        for (int t = 0; t < names.Length; t++)
        {
            histograms[t] = new long[bins];
            double top = Math.Max(Math.Abs(min[t]), Math.Abs(max[t]));
            width[t] = top > 0 ? top / bins : 1;
        }
        Each(session, names, samples, model.Source, (t, values) =>
        {
            long[] histogram = histograms[t];
            double scale = 1 / width[t];
            foreach (float v in values)
            {
                // Zeros are exact at any scale (the range always holds 0): counting them would let a Relu's spike at 0 decide the threshold.
                if (v != 0)
                {
                    histogram[Math.Min(bins - 1, (int)(MathF.Abs(v) * scale))]++;
                }
            }
        });
        for (int t = 0; t < names.Length; t++)
        {
            if (outputs.Contains(names[t]))
            {
                // The model's outputs are what its user reads: clipping their largest values costs more than a coarser scale.
                ranges[names[t]] = new TensorRange(min[t], max[t]);
                continue;
            }
            bool nonNegative = min[t] >= 0;
            int levels = symmetric || !nonNegative ? 128 : 256;
            double threshold = method == CalibrationMethod.Percentile
                ? PercentileThreshold(histograms[t], width[t], percentile)
                : EntropyThreshold(histograms[t], width[t], levels);
            float low = Math.Max(min[t], (float)-threshold), high = Math.Min(max[t], (float)threshold);
            // A threshold below the smallest |x| of data of one sign clips everything: keep the seen range then.
            ranges[names[t]] = high >= low ? new TensorRange(low, high) : new TensorRange(min[t], max[t]);
        }
        return ranges;
    }

    private static void Each(InferenceSession session, string[] names, IReadOnlyList<IReadOnlyDictionary<string, TensorValue>> samples, string source, Action<int, ReadOnlySpan<float>> visit)
    {
        for (int s = 0; s < samples.Count; s++)
        {
            var inputNames = new List<string>();
            var inputs = new List<OrtValue>();
            try
            {
                foreach ((string name, TensorValue value) in samples[s])
                {
                    inputNames.Add(name);
                    inputs.Add(ModelRunner.ToOrtValue(value));
                }
                using var runOptions = new RunOptions();
                using IDisposableReadOnlyCollection<OrtValue> results = session.Run(runOptions, inputNames, inputs, names);
                for (int t = 0; t < names.Length; t++)
                {
                    visit(t, results[t].GetTensorDataAsSpan<float>());
                }
            }
            catch (OnnxRuntimeException e)
            {
                throw new OptimizeException($"{source}: calibration sample {s + 1} does not run: {e.Message}", e);
            }
            finally
            {
                foreach (OrtValue input in inputs)
                {
                    input.Dispose();
                }
            }
        }
    }

    /// <summary>The smallest |x| below which <paramref name="percentile"/> percent of the values lie (upper edge of its bin).</summary>
    internal static double PercentileThreshold(long[] histogram, double width, double percentile)
    {
        long total = histogram.Sum();
        double wanted = total * percentile / 100;
        long seen = 0;
        for (int i = 0; i < histogram.Length; i++)
        {
            seen += histogram[i];
            if (seen >= wanted)
            {
                return (i + 1) * width;
            }
        }
        return histogram.Length * width;
    }

    /// <summary>
    /// TensorRT's search: for each candidate threshold (bin i from <paramref name="levels"/> on), the reference
    /// distribution is the histogram cut at i with the clipped tail added to its last bin; the candidate is the cut
    /// histogram (tail left out) merged into <paramref name="levels"/> groups and spread back evenly over the bins the
    /// reference has non-empty. Clipping thus costs the tail's mass; coarse levels cost the detail they merge. The
    /// threshold with the least KL divergence between the two wins.
    /// </summary>
    internal static double EntropyThreshold(long[] histogram, double width, int levels)
    {
        int n = histogram.Length;
        if (n <= levels)
        {
            return n * width;
        }
        var tail = new long[n + 1];
        for (int i = n - 1; i >= 0; i--)
        {
            tail[i] = tail[i + 1] + histogram[i];
        }
        if (tail[0] == 0)
        {
            return n * width;
        }
        double best = double.PositiveInfinity;
        int bestBins = n;
        var reference = new double[n];
        var candidate = new double[n];
        for (int i = levels; i <= n; i++)
        {
            for (int b = 0; b < i; b++)
            {
                reference[b] = histogram[b];
            }
            reference[i - 1] += tail[i];
            for (int g = 0; g < levels; g++)
            {
                int start = (int)((long)g * i / levels), end = (int)((long)(g + 1) * i / levels);
                double sum = 0;
                int nonEmpty = 0;
                for (int b = start; b < end; b++)
                {
                    sum += histogram[b];
                    nonEmpty += reference[b] != 0 ? 1 : 0;
                }
                double share = nonEmpty > 0 ? sum / nonEmpty : 0;
                for (int b = start; b < end; b++)
                {
                    candidate[b] = reference[b] != 0 ? share : 0;
                }
            }
            double divergence = Divergence(reference, candidate, i);
            if (divergence < best)
            {
                best = divergence;
                bestBins = i;
            }
        }
        return bestBins * width;
    }

    /// <summary>KL(p‖q), both divided by p's total: q lacks the clipped tail, so clipping is paid for even where the cut histogram is too sparse to show it.</summary>
    private static double Divergence(double[] p, double[] q, int count)
    {
        double total = 0;
        for (int b = 0; b < count; b++)
        {
            total += p[b];
        }
        if (total == 0)
        {
            return double.PositiveInfinity;
        }
        double divergence = 0;
        for (int b = 0; b < count; b++)
        {
            if (p[b] == 0)
            {
                continue;
            }
            double pb = p[b] / total;
            double qb = q[b] > 0 ? q[b] / total : 1e-12;
            divergence += pb * Math.Log(pb / qb);
        }
        return divergence;
    }
}
