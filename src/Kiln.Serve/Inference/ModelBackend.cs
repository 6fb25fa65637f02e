using System.Globalization;

namespace Kiln.Serve.Inference;

/// <summary>
/// A model with one float32 input loaded once (ONNX Runtime or TorchScript) and shared by every worker thread of its
/// model version; <see cref="RunOne"/> must be thread-safe. Runs a batch stacked along dimension 0 when the input's
/// first dimension is dynamic and the items agree on the other dimensions, one item at a time otherwise.
/// </summary>
internal abstract class ModelBackend : IDisposable
{
    /// <summary>The Open Inference Protocol platform name, e.g. <c>onnxruntime_onnx</c>.</summary>
    public abstract string Platform { get; }

    /// <summary>Where the model runs, as TorchServe's describe output says it (<c>cpu</c> or <c>gpu</c>).</summary>
    public virtual string DeviceType => "cpu";

    public abstract string InputName { get; }

    /// <summary>
    /// The input's dimensions; -1 (or 0) for a symbolic dimension. Empty when the format does not declare them
    /// (TorchScript): then any shape is passed to the model and handlers pick their defaults (e.g. 224×224 images).
    /// </summary>
    public abstract long[] InputDimensions { get; }

    public abstract IReadOnlyList<string> OutputNames { get; }

    /// <summary>Each output's dimensions, in <see cref="OutputNames"/> order; -1 (or 0) for a symbolic dimension.</summary>
    public abstract IReadOnlyList<long[]> OutputDimensions { get; }

    /// <summary>Whether several items can run as one tensor stacked along dimension 0.</summary>
    protected virtual bool BatchDimensionIsDynamic => InputDimensions.Length > 0 && InputDimensions[0] <= 0;

    /// <summary>Checks a tensor against the input's rank and fixed dimensions (400 when it does not fit).</summary>
    public void Validate(FloatTensor tensor)
    {
        if (InputDimensions.Length == 0)
        {
            return;
        }
        bool fits = tensor.Shape.Length == InputDimensions.Length;
        for (int i = 0; fits && i < InputDimensions.Length; i++)
        {
            fits = InputDimensions[i] <= 0 || InputDimensions[i] == tensor.Shape[i];
        }
        if (!fits)
        {
            throw ServeException.BadRequest($"Input shape {tensor.ShapeText} does not match the model's input '{InputName}' [{string.Join(",", InputDimensions.Select(d => d <= 0 ? "N" : d.ToString(CultureInfo.InvariantCulture)))}].");
        }
    }

    /// <summary>Runs validated tensors; returns, per item, one tensor per output.</summary>
    public FloatTensor[][] Run(IReadOnlyList<FloatTensor> items)
    {
        var results = new FloatTensor[items.Count][];
        if (items.Count > 1 && BatchDimensionIsDynamic && items.All(t => t.Shape.AsSpan(1).SequenceEqual(items[0].Shape.AsSpan(1))))
        {
            long[] rows = [.. items.Select(t => t.Shape[0])];
            long[] shape = [.. items[0].Shape];
            shape[0] = rows.Sum();
            float[] stacked = new float[FloatTensor.Count(shape)];
            int at = 0;
            foreach (FloatTensor item in items)
            {
                item.Data.CopyTo(stacked, at);
                at += item.Data.Length;
            }
            FloatTensor[] outputs = RunOne(new FloatTensor(stacked, shape));
            if (outputs.All(o => o.Shape.Length > 0 && o.Shape[0] == shape[0]))
            {
                long first = 0;
                for (int i = 0; i < items.Count; i++)
                {
                    results[i] = [.. outputs.Select(o => Slice(o, first, rows[i], shape[0]))];
                    first += rows[i];
                }
                return results;
            }
        }
        for (int i = 0; i < items.Count; i++)
        {
            results[i] = RunOne(items[i]);
        }
        return results;
    }

    /// <summary>
    /// Runs validated tensors like <see cref="Run"/>, but a request the model rejects (a 400 from <see cref="RunOne"/>)
    /// fails only itself: when the stacked batch is rejected, its items run one by one.
    /// </summary>
    public (FloatTensor[]? Outputs, ServeException? Error)[] RunEach(IReadOnlyList<FloatTensor> items)
    {
        try
        {
            return [.. Run(items).Select(r => ((FloatTensor[]?)r, (ServeException?)null))];
        }
        catch (ServeException ex) when (ex.StatusCode == 400 && items.Count > 1)
        {
            var results = new (FloatTensor[]?, ServeException?)[items.Count];
            for (int i = 0; i < items.Count; i++)
            {
                try
                {
                    results[i] = (RunOne(items[i]), null);
                }
                catch (ServeException itemError) when (itemError.StatusCode == 400)
                {
                    results[i] = (null, itemError);
                }
            }
            return results;
        }
    }

    /// <summary>Runs one input tensor; returns one tensor per output. Thread-safe.</summary>
    protected abstract FloatTensor[] RunOne(FloatTensor input);

    private static FloatTensor Slice(FloatTensor output, long firstRow, long rows, long totalRows)
    {
        long perRow = output.Data.Length / totalRows;
        long[] shape = [.. output.Shape];
        shape[0] = rows;
        return new FloatTensor(output.Data.AsSpan((int)(firstRow * perRow), (int)(rows * perRow)).ToArray(), shape);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected abstract void Dispose(bool disposing);
}
