namespace Kiln.Optimize;

/// <summary>How <c>kiln optimize</c> quantizes.</summary>
public enum QuantizeMode
{
    /// <summary>Graph passes only.</summary>
    None,

    /// <summary>Dynamic int8: weights int8, activations quantized at run time (MatMuls with constant weights).</summary>
    DynamicInt8,

    /// <summary>Weight-only int4: MatMuls with constant weights become ONNX Runtime's MatMulNBits (blocks of <see cref="OptimizeOptions.BlockSize"/>).</summary>
    Int4,

    /// <summary>float16 weights and compute, float32 inputs and outputs (for GPUs: slower than float32 on ORT's CPU EP).</summary>
    Float16,

    /// <summary>Static int8 in QDQ form: weights int8, activations quantized with ranges calibrated on <see cref="OptimizeOptions.CalibrationDirectory"/> (Conv, MatMul, Gemm, Add, pools…).</summary>
    StaticInt8,
}

/// <summary>What <see cref="ModelOptimizer"/> does; immutable once built.</summary>
public sealed class OptimizeOptions
{
    /// <summary>Measure the model only; change nothing.</summary>
    public bool ReportOnly { get; init; }

    /// <summary>The quantization to apply after the graph passes.</summary>
    public QuantizeMode Quantize { get; init; }

    /// <summary>Int8 weights get one scale per output column instead of one per tensor.</summary>
    public bool PerChannel { get; init; } = true;

    /// <summary>With int8: the lowest mean cosine to the float model's outputs; the worst nodes stay float until it holds.</summary>
    /// <remarks>Shorthand for a cosine entry in <see cref="Budgets"/>; both apply.</remarks>
    public double? MinimumCosine { get; init; }

    /// <summary>
    /// With quantization: accuracy bounds that must all hold on the sample inputs (cosine, top-1 agreement, max abs
    /// error); the nodes contributing most error stay float until they do. Empty: quantize every candidate.
    /// </summary>
    public IReadOnlyList<AccuracyBudgetSpec> Budgets { get; init; } = [];

    /// <summary><see cref="Budgets"/> together with <see cref="MinimumCosine"/>.</summary>
    internal IReadOnlyList<AccuracyBudgetSpec> AllBudgets =>
        MinimumCosine is { } cosine ? [.. Budgets, new AccuracyBudgetSpec(AccuracyMetric.Cosine, cosine)] : Budgets;

    /// <summary>
    /// The op types to quantize. With int8: MatMul, Gemm, Gather, Conv, Attention (self-attention fused into one
    /// QAttention); null: MatMul, Gemm, Gather and Attention. With int4: MatMul,
    /// Gemm, Gather (embedding tables as GatherBlockQuantized); null: MatMul and Gemm.
    /// </summary>
    public IReadOnlySet<string>? OpTypes { get; init; }

    /// <summary>Optional graph passes to run after the default fusions (see <see cref="ModelOptimizer.OptionalPassNames"/>).</summary>
    public IReadOnlyList<string> ExtraPasses { get; init; } = [];

    /// <summary>With int8: embedding tables (Gather) with a scale per row instead of one per table (a little more accurate, a little slower).</summary>
    public bool GatherPerRow { get; init; }

    /// <summary>With int4: values per quantization block along K (a power of two, at least 16).</summary>
    public int BlockSize { get; init; } = 32;

    /// <summary>With int4: symmetric blocks (default) or asymmetric ones with a 4-bit zero point each.</summary>
    public bool Int4Symmetric { get; init; } = true;

    /// <summary>With int4: MatMulNBits' accuracy_level, 0 (ORT's default) to 4 (activations quantized to int8 on CPU).</summary>
    public int Int4AccuracyLevel { get; init; }

    /// <summary>With fp16: op types to keep in float32 besides the built-in block list (e.g. Softmax).</summary>
    public IReadOnlySet<string> KeepFloat32OpTypes { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Graph inputs fixed to a scalar value (e.g. a sample rate of 16000): the result only computes what the model computes for them.</summary>
    public IReadOnlyDictionary<string, double> Specialize { get; init; } = new Dictionary<string, double>();

    /// <summary>Shapes of the generated inputs by input name (others: declared dims, symbolic ones 1).</summary>
    public IReadOnlyDictionary<string, long[]> InputShapes { get; init; } = new Dictionary<string, long[]>();

    /// <summary>With static int8: the directory of calibration samples (format: <c>docs/optimize.md</c>, "Sample directories").</summary>
    public string? CalibrationDirectory { get; init; }

    /// <summary>With static int8: how the calibration samples become activation ranges.</summary>
    public Quantization.CalibrationMethod CalibrationMethod { get; init; }

    /// <summary>With static int8: activations as int8 symmetric instead of uint8 asymmetric.</summary>
    public bool SymmetricActivations { get; init; }

    /// <summary>A directory of the user's inputs (same format as the calibration samples): the first is measured, all are compared.</summary>
    public string? InputsDirectory { get; init; }

    /// <summary>How long each latency measurement runs at most.</summary>
    public TimeSpan MeasureTime { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Intra-op threads of the measuring ONNX Runtime sessions (0: ONNX Runtime's default).</summary>
    public int Threads { get; init; } = 1;
}
