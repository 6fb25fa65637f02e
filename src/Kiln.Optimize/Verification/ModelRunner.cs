using Kiln.Optimize.Onnx.Proto;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Verification;

/// <summary>An input or output tensor: its element type, shape and values (numbers held as doubles for comparison).</summary>
internal sealed record TensorValue(TensorElementType Type, long[] Shape, double[] Values);

/// <summary>Runs a model in ONNX Runtime (graph optimizations off, so that Kiln's rewrite is what runs) on given inputs.</summary>
internal static class ModelRunner
{
    /// <summary>Inputs for every graph input that is not an initializer, from its declared type (or <paramref name="shapes"/>); symbolic dims are 1.</summary>
    public static Dictionary<string, TensorValue> SampleInputs(OnnxModel model, int seed = 1, IReadOnlyDictionary<string, long[]>? shapes = null)
    {
        var random = new Random(seed);
        var initializers = new HashSet<string>(model.Proto.Graph.Initializer.Select(i => i.Name), StringComparer.Ordinal);
        var inputs = new Dictionary<string, TensorValue>(StringComparer.Ordinal);
        foreach (ValueInfoProto input in model.Proto.Graph.Input.Where(i => !initializers.Contains(i.Name)))
        {
            TypeProto.Types.Tensor tensor = input.Type?.TensorType
                ?? throw new OptimizeException($"{model.Source}: input '{input.Name}' is not a tensor; give inputs explicitly");
            long[] shape = shapes?.GetValueOrDefault(input.Name) ?? [.. (tensor.Shape?.Dim ?? []).Select(d => d.HasDimValue && d.DimValue > 0 ? d.DimValue : 1)];
            long count = shape.Aggregate(1L, (a, b) => a * b);
            var type = (TensorElementType)tensor.ElemType;
            double[] values = type switch
            {
                TensorElementType.Float or TensorElementType.Double => [.. Enumerable.Range(0, (int)count).Select(_ => (random.NextDouble() * 2) - 1)],
                // Attention masks hold 0 and 1 (fused attention reads any value above 0 as 1); other integers 0 to 3.
                TensorElementType.Int64 or TensorElementType.Int32 => [.. Enumerable.Range(0, (int)count).Select(_ => (double)random.Next(0, input.Name.Contains("mask", StringComparison.OrdinalIgnoreCase) ? 2 : 4))],
                TensorElementType.Bool => [.. Enumerable.Range(0, (int)count).Select(_ => (double)random.Next(0, 2))],
                _ => throw new OptimizeException($"{model.Source}: input '{input.Name}' has element type {type}; give inputs explicitly"),
            };
            inputs[input.Name] = new TensorValue(type, shape, values);
        }
        return inputs;
    }

    /// <summary>Runs the model and returns every graph output.</summary>
    /// <exception cref="Kiln.Runtime.KilnRuntimeException">ONNX Runtime rejects the model.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails to run it.</exception>
    public static Dictionary<string, TensorValue> Run(OnnxModel model, IReadOnlyDictionary<string, TensorValue> inputs)
    {
        using InferenceSession session = Open(model, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpThreads = 1 });
        return RunSession(session, inputs);
    }

    /// <summary>
    /// Opens a session on the model: from its bytes, or, when its weights exceed <paramref name="inlineLimit"/> (protobuf's
    /// 2 GB by default), from a temporary file with external data, since ONNX Runtime finds external data by path only.
    /// </summary>
    /// <remarks>The caller owns the returned session and must dispose it.</remarks>
    public static InferenceSession Open(OnnxModel model, OnnxSessionOptions options, long inlineLimit = OnnxSaveOptions.ProtobufLimit)
    {
        if (model.InitializerBytes < inlineLimit)
        {
            return OnnxSessionFactory.Open(model.ToBytes(), options);
        }
        string dir = Directory.CreateTempSubdirectory("kiln-external-").FullName;
        try
        {
            string path = Path.Combine(dir, "model.onnx");
            model.Save(path, new OnnxSaveOptions { ExternalDataThreshold = 0 });
            return OnnxSessionFactory.Open(path, options);
        }
        finally
        {
            try
            {
                // ONNX Runtime has read (or mapped) the data by now; where the system keeps the file open, it stays until reboot clean-up.
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>A session as <see cref="Run"/> uses (graph optimizations off, one thread), for running many inputs.</summary>
    public static InferenceSession Open(OnnxModel model) =>
        Open(model, new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpThreads = 1 });

    /// <summary>Runs an open session on <paramref name="inputs"/> and returns every output.</summary>
    public static Dictionary<string, TensorValue> RunSession(InferenceSession session, IReadOnlyDictionary<string, TensorValue> inputs)
    {
        var names = new List<string>();
        var values = new List<OrtValue>();
        try
        {
            foreach ((string name, TensorValue value) in inputs)
            {
                names.Add(name);
                values.Add(ToOrtValue(value));
            }
            string[] outputNames = [.. session.OutputNames];
            using var runOptions = new RunOptions();
            using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, names, values, outputNames);
            var result = new Dictionary<string, TensorValue>(StringComparer.Ordinal);
            for (int i = 0; i < outputNames.Length; i++)
            {
                result[outputNames[i]] = FromOrtValue(outputs[i]);
            }
            return result;
        }
        finally
        {
            foreach (OrtValue value in values)
            {
                value.Dispose();
            }
        }
    }

    /// <summary>The largest absolute difference between two runs' outputs (infinite when their names or shapes differ).</summary>
    public static double MaxAbsDifference(IReadOnlyDictionary<string, TensorValue> expected, IReadOnlyDictionary<string, TensorValue> actual)
    {
        double worst = 0;
        foreach ((string name, TensorValue e) in expected)
        {
            if (!actual.TryGetValue(name, out TensorValue? a) || !a.Shape.SequenceEqual(e.Shape))
            {
                return double.PositiveInfinity;
            }
            for (int i = 0; i < e.Values.Length; i++)
            {
                double d = Math.Abs(e.Values[i] - a.Values[i]);
                if (double.IsNaN(d) && !(double.IsNaN(e.Values[i]) && double.IsNaN(a.Values[i])))
                {
                    return double.PositiveInfinity;
                }
                worst = Math.Max(worst, double.IsNaN(d) ? 0 : d);
            }
        }
        return worst;
    }

    /// <summary>The cosine between all of one run's outputs and another's, taken as one vector (1 when both are all zeros).</summary>
    public static double Cosine(IReadOnlyDictionary<string, TensorValue> expected, IReadOnlyDictionary<string, TensorValue> actual)
    {
        double dot = 0, ne = 0, na = 0;
        foreach ((string name, TensorValue e) in expected)
        {
            double[] a = actual[name].Values;
            for (int i = 0; i < e.Values.Length; i++)
            {
                dot += e.Values[i] * a[i];
                ne += e.Values[i] * e.Values[i];
                na += a[i] * a[i];
            }
        }
        return ne == 0 && na == 0 ? 1 : dot / Math.Sqrt(ne * na);
    }

    /// <summary>The value as an ONNX Runtime tensor; the caller owns and disposes it.</summary>
    internal static OrtValue ToOrtValue(TensorValue value) => value.Type switch
    {
        TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(value.Values.Select(v => (float)v).ToArray(), value.Shape),
        TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(value.Values.ToArray(), value.Shape),
        TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(value.Values.Select(v => (long)v).ToArray(), value.Shape),
        TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(value.Values.Select(v => (int)v).ToArray(), value.Shape),
        TensorElementType.Bool => OrtValue.CreateTensorValueFromMemory(value.Values.Select(v => v != 0).ToArray(), value.Shape),
        TensorElementType.UInt8 => OrtValue.CreateTensorValueFromMemory(value.Values.Select(v => (byte)v).ToArray(), value.Shape),
        _ => throw new OptimizeException($"inputs of element type {value.Type} are not supported yet"),
    };

    private static TensorValue FromOrtValue(OrtValue value)
    {
        OrtTensorTypeAndShapeInfo info = value.GetTensorTypeAndShape();
        double[] values = info.ElementDataType switch
        {
            TensorElementType.Float => [.. value.GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v)],
            TensorElementType.Double => value.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Int64 => [.. value.GetTensorDataAsSpan<long>().ToArray().Select(v => (double)v)],
            TensorElementType.Int32 => [.. value.GetTensorDataAsSpan<int>().ToArray().Select(v => (double)v)],
            TensorElementType.Bool => [.. value.GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1.0 : 0.0)],
            TensorElementType.UInt8 => [.. value.GetTensorDataAsSpan<byte>().ToArray().Select(v => (double)v)],
            TensorElementType.Int8 => [.. value.GetTensorDataAsSpan<sbyte>().ToArray().Select(v => (double)v)],
            TensorElementType other => throw new OptimizeException($"outputs of element type {other} are not compared yet"),
        };
        return new TensorValue(info.ElementDataType, info.Shape, values);
    }
}
