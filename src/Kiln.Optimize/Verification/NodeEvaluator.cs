using Google.Protobuf;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Verification;

/// <summary>Evaluates one node on constant inputs by running it alone in ONNX Runtime (graph optimizations off).</summary>
internal static class NodeEvaluator
{
    /// <summary>
    /// The node's named outputs as tensors holding raw_data, or null when an output is not a tensor of fixed-size
    /// elements (strings, sequences, maps).
    /// </summary>
    /// <param name="node">The node; it is copied, not changed.</param>
    /// <param name="inputs">A tensor for each named input of the node, named as the input.</param>
    /// <param name="context">The model the node comes from: its IR version and operator sets are used.</param>
    /// <exception cref="KilnRuntimeException">ONNX Runtime rejects the one-node model.</exception>
    /// <exception cref="OnnxRuntimeException">ONNX Runtime fails to run it.</exception>
    public static List<TensorProto>? Evaluate(NodeProto node, IEnumerable<TensorProto> inputs, ModelProto context)
    {
        var graph = new GraphProto { Name = "evaluate" };
        graph.Node.Add(node.Clone());
        graph.Initializer.AddRange(inputs.Select(t => t.Clone()));
        string[] outputs = [.. node.Output.Where(o => o.Length > 0)];
        graph.Output.AddRange(outputs.Select(o => new ValueInfoProto { Name = o }));
        var model = new ModelProto { IrVersion = Math.Max(context.IrVersion, 4), ProducerName = "kiln-evaluate", Graph = graph };
        model.OpsetImport.AddRange(context.OpsetImport.Select(o => o.Clone()));

        using InferenceSession session = OnnxSessionFactory.Open(model.ToByteArray(), new OnnxSessionOptions { OptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL, IntraOpThreads = 1 });
        using var runOptions = new RunOptions();
        using IDisposableReadOnlyCollection<OrtValue> values = session.Run(runOptions, [], [], outputs);
        var result = new List<TensorProto>(outputs.Length);
        for (int i = 0; i < outputs.Length; i++)
        {
            OrtValue value = values[i];
            if (!value.IsTensor)
            {
                return null;
            }
            OrtTensorTypeAndShapeInfo info = value.GetTensorTypeAndShape();
            if (info.ElementDataType is TensorElementType.String or TensorElementType.DataTypeMax)
            {
                return null;
            }
            // ONNX Runtime's tensor memory is laid out as ONNX's little-endian raw_data for every fixed-size type.
            var tensor = new TensorProto { Name = outputs[i], DataType = (int)info.ElementDataType, RawData = ByteString.CopyFrom(value.GetTensorMutableRawData()) };
            tensor.Dims.AddRange(info.Shape);
            result.Add(tensor);
        }
        return result;
    }
}
