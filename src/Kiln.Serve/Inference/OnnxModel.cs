using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Serve.Inference;

/// <summary>
/// One ONNX Runtime session (opened through <see cref="OnnxSessionFactory"/>) for a model with one float32 input,
/// shared by every worker thread of its model version (<see cref="InferenceSession.Run(IReadOnlyCollection{NamedOnnxValue})"/>
/// is thread-safe). Runs a batch stacked along dimension 0 when the model's first input dimension is dynamic, one
/// item at a time otherwise.
/// </summary>
internal sealed class OnnxModel : IDisposable
{
    private readonly InferenceSession _session;
    private readonly string _inputName;
    private readonly string[] _outputNames;

    public OnnxModel(string path, int intraOpThreads)
    {
        _session = OnnxSessionFactory.Open(path, new OnnxSessionOptions { IntraOpThreads = intraOpThreads });
        try
        {
            if (_session.InputMetadata.Count != 1)
            {
                throw new ServeException(400, "ModelException", $"{Path.GetFileName(path)} has {_session.InputMetadata.Count} inputs; the built-in handlers take models with one float32 input.");
            }
            (string name, NodeMetadata input) = _session.InputMetadata.Single();
            if (input.ElementType != typeof(float))
            {
                throw new ServeException(400, "ModelException", $"{Path.GetFileName(path)}'s input '{name}' is {input.ElementType.Name}; the built-in handlers take float32 inputs.");
            }
            _inputName = name;
            InputDimensions = [.. input.Dimensions.Select(d => (long)d)];
            _outputNames = [.. _session.OutputMetadata.Where(o => o.Value.ElementType == typeof(float)).Select(o => o.Key)];
            OutputDimensions = [.. _outputNames.Select(o => _session.OutputMetadata[o].Dimensions.Select(d => (long)d).ToArray())];
            if (_outputNames.Length == 0)
            {
                throw new ServeException(400, "ModelException", $"{Path.GetFileName(path)} has no float32 output.");
            }
        }
        catch
        {
            _session.Dispose();
            throw;
        }
    }

    public string InputName => _inputName;

    /// <summary>The input's dimensions; -1 (or 0) for a symbolic dimension.</summary>
    public long[] InputDimensions { get; }

    public IReadOnlyList<string> OutputNames => _outputNames;

    /// <summary>Each float output's dimensions, in <see cref="OutputNames"/> order; -1 (or 0) for a symbolic dimension.</summary>
    public IReadOnlyList<long[]> OutputDimensions { get; } = [];

    private bool BatchDimensionIsDynamic => InputDimensions.Length > 0 && InputDimensions[0] <= 0;

    /// <summary>Checks a tensor against the input's rank and fixed dimensions (400 when it does not fit).</summary>
    public void Validate(FloatTensor tensor)
    {
        bool fits = tensor.Shape.Length == InputDimensions.Length;
        for (int i = 0; fits && i < InputDimensions.Length; i++)
        {
            fits = InputDimensions[i] <= 0 || InputDimensions[i] == tensor.Shape[i];
        }
        if (!fits)
        {
            throw ServeException.BadRequest($"Input shape {tensor.ShapeText} does not match the model's input '{_inputName}' [{string.Join(",", InputDimensions.Select(d => d <= 0 ? "N" : d.ToString(System.Globalization.CultureInfo.InvariantCulture)))}].");
        }
    }

    /// <summary>Runs validated tensors; returns, per item, one tensor per float output.</summary>
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

    private static FloatTensor Slice(FloatTensor output, long firstRow, long rows, long totalRows)
    {
        long perRow = output.Data.Length / totalRows;
        long[] shape = [.. output.Shape];
        shape[0] = rows;
        return new FloatTensor(output.Data.AsSpan((int)(firstRow * perRow), (int)(rows * perRow)).ToArray(), shape);
    }

    private FloatTensor[] RunOne(FloatTensor input)
    {
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(input.Data, input.Shape);
        using var options = new RunOptions();
        try
        {
            using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options, [_inputName], [value], _outputNames);
            return [.. outputs.Select(o => new FloatTensor(o.GetTensorDataAsSpan<float>().ToArray(), o.GetTensorTypeAndShape().Shape))];
        }
        catch (OnnxRuntimeException ex)
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: {ex.Message}", ex);
        }
    }

    public void Dispose() => _session.Dispose();
}
