namespace Kiln.Optimize;

/// <summary>One model's figures: size, nodes, latency at batch 1 (and 32 where the batch dimension is free), accuracy to the baseline.</summary>
/// <param name="FileBytes">Serialized size.</param>
/// <param name="Nodes">Nodes, those of If/Loop/Scan bodies included.</param>
/// <param name="P50Batch1Ms">Median latency of one run at batch 1, in milliseconds.</param>
/// <param name="P99Batch1Ms">99th percentile at batch 1.</param>
/// <param name="P50Batch32Ms">Median at batch 32, or null when the first input dimension is fixed.</param>
/// <param name="ThroughputBatch1">Runs per second at batch 1 (from the median).</param>
/// <param name="MaxAbsError">Largest absolute difference of any output to the baseline's on the same inputs.</param>
/// <param name="Cosine">Cosine between all outputs and the baseline's.</param>
/// <param name="Top1Agreement">
/// Where the first output looks like class scores ([B, C], C ≥ 2): the share of rows whose argmax agrees with the
/// baseline's; null otherwise.
/// </param>
/// <param name="Top5Agreement">Likewise, the share of rows where the baseline's argmax is among the result's 5 largest (C &gt; 5); null otherwise.</param>
public sealed record ModelFigures(long FileBytes, int Nodes, double P50Batch1Ms, double P99Batch1Ms, double? P50Batch32Ms, double ThroughputBatch1, double MaxAbsError, double Cosine,
    double? Top1Agreement = null, double? Top5Agreement = null);

/// <summary>A node the accuracy budget left in float, with its measured contribution (the accuracy with that node alone quantized).</summary>
/// <param name="Node">The node's name.</param>
/// <param name="Cosine">Mean output cosine to the float model with only this node quantized.</param>
/// <param name="Top1Agreement">Top-1 agreement of the first output with only this node quantized.</param>
/// <param name="MaxAbsError">Largest absolute output difference with only this node quantized.</param>
public sealed record KeptFloatNode(string Node, double Cosine, double Top1Agreement, double MaxAbsError);

/// <summary>What a pass or quantization step did.</summary>
/// <param name="Step">The pass or step name.</param>
/// <param name="Kept">Whether its result was kept.</param>
/// <param name="Detail">Changes made, or why it was rolled back.</param>
public sealed record StepOutcome(string Step, bool Kept, string Detail);

/// <summary>The baseline and the result side by side.</summary>
/// <param name="Model">The input file.</param>
/// <param name="Output">The file written, or null (report only).</param>
/// <param name="Baseline">The input model's figures.</param>
/// <param name="Result">The optimized model's figures (the baseline's when nothing changed).</param>
/// <param name="Steps">What each pass and quantization step did.</param>
/// <param name="KeptFloat">Nodes the accuracy budget left in float, worst first (empty without a budget or when none was needed).</param>
public sealed record OptimizationReport(string Model, string? Output, ModelFigures Baseline, ModelFigures Result, IReadOnlyList<StepOutcome> Steps,
    IReadOnlyList<KeptFloatNode>? KeptFloat = null);
