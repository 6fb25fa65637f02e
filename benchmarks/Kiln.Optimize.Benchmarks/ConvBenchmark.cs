using System.Diagnostics;
using System.Globalization;
using Google.Protobuf;
using Kiln.Optimize;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Quantization;
using Microsoft.ML.OnnxRuntime;

/// <summary>
/// float Conv against Kiln's dynamic-int8 Conv (ConvInteger) on a ResNet-like stack: x[1, C, S, S] → layers × (Conv 3×3
/// C→C, pads 1, bias → Relu), random weights, both models alternating in one run.
/// </summary>
internal static class ConvBenchmark
{
    public static void Run(int threads, int rounds, int channels = 64, int size = 56, int layers = 4)
    {
        var random = new Random(1);
        float[] Values(int count, float amplitude) => [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * amplitude)];
        var graph = new GraphProto { Name = "convs" };
        graph.Input.Add(Value("x", [1, channels, size, size]));
        graph.Output.Add(Value($"r{layers}", [1, channels, size, size]));
        for (int l = 1; l <= layers; l++)
        {
            graph.Initializer.Add(Tensor($"W{l}", [channels, channels, 3, 3], Values(channels * channels * 9, 0.06f)));
            graph.Initializer.Add(Tensor($"B{l}", [channels], Values(channels, 0.1f)));
            var conv = new NodeProto { OpType = "Conv", Name = $"conv{l}", Input = { l == 1 ? "x" : $"r{l - 1}", $"W{l}", $"B{l}" }, Output = { $"c{l}" } };
            conv.Attribute.Add(new AttributeProto { Name = "pads", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 1, 1, 1, 1 } });
            graph.Node.Add(conv);
            graph.Node.Add(new NodeProto { OpType = "Relu", Name = $"relu{l}", Input = { $"c{l}" }, Output = { $"r{l}" } });
        }
        var proto = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } } };
        OnnxModel model = OnnxModel.FromBytes(proto.ToByteArray());
        foreach (bool perChannel in new[] { false, true })
        {
            OnnxModel quantized = model.Clone();
            new DynamicInt8Quantizer { PerChannel = perChannel, OpTypes = new HashSet<string> { "Conv" } }.Apply(quantized);
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads, InterOpNumThreads = 1 };
            using var fp32 = new InferenceSession(model.ToBytes(), options);
            using var int8 = new InferenceSession(quantized.ToBytes(), options);
            float[] input = Values(channels * size * size, 1f);
            using OrtValue x = OrtValue.CreateTensorValueFromMemory(input, [1, channels, size, size]);
            var times = (Float: new List<double>(), Int8: new List<double>());
            float[] a = [], b = [];
            for (int i = 0; i < 3 + (rounds * 10); i++)
            {
                (double ta, a) = Time(fp32, x);
                (double tb, b) = Time(int8, x);
                if (i >= 3)
                {
                    times.Float.Add(ta);
                    times.Int8.Add(tb);
                }
            }
            double dot = 0, na = 0, nb = 0;
            for (int i = 0; i < a.Length; i++)
            {
                dot += a[i] * b[i];
                na += a[i] * a[i];
                nb += b[i] * b[i];
            }
            double p50f = times.Float.Order().ElementAt(times.Float.Count / 2), p50q = times.Int8.Order().ElementAt(times.Int8.Count / 2);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"model\":\"conv 3x3 x{layers}, {channels} channels, {size}x{size}\",\"per_channel\":{(perChannel ? "true" : "false")},\"threads\":{threads},\"runs_each\":{times.Float.Count},\"fp32_p50_ms\":{p50f:F3},\"int8_p50_ms\":{p50q:F3},\"speedup_p50\":{p50f / p50q:F2},\"cosine\":{dot / Math.Sqrt(na * nb):F5}}}"));
        }
    }

    private static (double Milliseconds, float[] Output) Time(InferenceSession session, OrtValue x)
    {
        using var runOptions = new RunOptions();
        long start = Stopwatch.GetTimestamp();
        using IDisposableReadOnlyCollection<OrtValue> outputs = session.Run(runOptions, ["x"], [x], [session.OutputNames[0]]);
        double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        return (ms, outputs[0].GetTensorDataAsSpan<float>().ToArray());
    }

    private static ValueInfoProto Value(string name, long[] shape)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto() };
        tensor.Shape.Dim.AddRange(shape.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }

    private static TensorProto Tensor(string name, long[] dims, float[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom([.. values.SelectMany(BitConverter.GetBytes)]) };
        tensor.Dims.AddRange(dims);
        return tensor;
    }
}
