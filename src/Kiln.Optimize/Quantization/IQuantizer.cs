namespace Kiln.Optimize.Quantization;

/// <summary>
/// One way of quantizing a model. The accuracy budget drives every quantizer the same way: it applies it to copies of
/// the model with different <see cref="Exclude"/> sets and keeps the copy that meets the budget.
/// </summary>
internal interface IQuantizer
{
    /// <summary>Short name for reports ("int8", "int8-static", "int4", "fp16").</summary>
    public string Name { get; }

    /// <summary>Nodes (by name) to leave in float.</summary>
    public ISet<string> Exclude { get; init; }

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the nodes it quantized (the candidates the budget may exclude).</summary>
    public List<string> Apply(OnnxModel model);
}
