using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Serve.Inference;

/// <summary>
/// One ONNX Runtime session (opened through <see cref="OnnxSessionFactory"/>) for a model with one float32 input,
/// shared by every worker thread of its model version (<see cref="InferenceSession.Run(IReadOnlyCollection{NamedOnnxValue})"/>
/// is thread-safe). Runs a batch stacked along dimension 0 when the model's first input dimension is dynamic, one
/// item at a time otherwise. Runs on ONNX Runtime's CUDA provider when this build has it and the model did not ask for
/// the CPU (model-config.yaml <c>deviceType: cpu</c>).
/// </summary>
internal sealed class OnnxBackend : ModelBackend
{
    private readonly InferenceSession _session;
    private readonly string _inputName;
    private readonly string[] _outputNames;

    private readonly bool _onGpu;

    public OnnxBackend(string path, BackendOptions options)
    {
        (OnnxSessionOptions settings, _onGpu) = options.OnnxSession(path);
        _session = OnnxSessionFactory.Open(path, settings);
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
            // float32 outputs as they are; int64/int32 outputs (e.g. torchvision detectors' labels) converted to float.
            // Outputs of other element types are not exposed.
            _outputNames = [.. _session.OutputMetadata.Where(o => IsExposed(o.Value.ElementType)).Select(o => o.Key)];
            OutputDimensions = [.. _outputNames.Select(o => _session.OutputMetadata[o].Dimensions.Select(d => (long)d).ToArray())];
            if (!_outputNames.Any(o => _session.OutputMetadata[o].ElementType == typeof(float)))
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

    public override string Platform => "onnxruntime_onnx";

    public override string DeviceType => _onGpu ? "gpu" : "cpu";

    public override string InputName => _inputName;

    /// <summary>The input's dimensions; -1 (or 0) for a symbolic dimension.</summary>
    public override long[] InputDimensions { get; }

    public override IReadOnlyList<string> OutputNames => _outputNames;

    /// <summary>Each exposed output's dimensions, in <see cref="OutputNames"/> order; -1 (or 0) for a symbolic dimension.</summary>
    public override IReadOnlyList<long[]> OutputDimensions { get; } = [];

    protected override FloatTensor[] RunOne(FloatTensor input)
    {
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(input.Data, input.Shape);
        using var options = new RunOptions();
        try
        {
            using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options, [_inputName], [value], _outputNames);
            return [.. outputs.Select(o => new FloatTensor(ToFloat(o), o.GetTensorTypeAndShape().Shape))];
        }
        catch (OnnxRuntimeException ex)
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: {ex.Message}", ex);
        }
    }

    private static bool IsExposed(Type elementType) => elementType == typeof(float) || elementType == typeof(long) || elementType == typeof(int);

    /// <summary>A float32 output's values, or an int64/int32 output's values converted to float (exact up to 2^24).</summary>
    private static float[] ToFloat(OrtValue output)
    {
        TensorElementType type = output.GetTensorTypeAndShape().ElementDataType;
        if (type == TensorElementType.Int64)
        {
            ReadOnlySpan<long> values = output.GetTensorDataAsSpan<long>();
            float[] converted = new float[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                converted[i] = values[i];
            }
            return converted;
        }
        if (type == TensorElementType.Int32)
        {
            ReadOnlySpan<int> values = output.GetTensorDataAsSpan<int>();
            float[] converted = new float[values.Length];
            for (int i = 0; i < values.Length; i++)
            {
                converted[i] = values[i];
            }
            return converted;
        }
        return output.GetTensorDataAsSpan<float>().ToArray();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _session.Dispose();
        }
    }
}
