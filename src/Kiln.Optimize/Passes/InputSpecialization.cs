using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;
using Kiln.Optimize.Verification;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Fixes graph inputs to given values (e.g. a sample rate of 16000): each becomes an initializer and stops being an
/// input, so that constant folding and <see cref="IfElimination"/> can remove the branches it decided. The model then
/// only computes what it computed for those values.
/// </summary>
internal sealed class InputSpecialization(IReadOnlyDictionary<string, TensorValue> values) : IGraphPass
{
    public string Name => "specialize";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        foreach ((string name, TensorValue value) in values)
        {
            ValueInfoProto input = graph.Input.FirstOrDefault(i => i.Name == name)
                ?? throw new OptimizeException($"cannot specialize '{name}': the model's inputs are {string.Join(", ", graph.Input.Select(i => i.Name))}");
            graph.Input.Remove(input);
            if (Initializers.Find(graph, name) is { } overridable)
            {
                graph.Initializer.Remove(overridable);
            }
            graph.Initializer.Add(ToTensor(name, value));
        }
        return values.Count;
    }

    /// <summary>A TensorProto holding <paramref name="value"/> in its element type.</summary>
    public static TensorProto ToTensor(string name, TensorValue value)
    {
        var tensor = new TensorProto { Name = name };
        tensor.Dims.AddRange(value.Shape);
        switch (value.Type)
        {
            case TensorElementType.Float:
                tensor.DataType = (int)TensorProto.Types.DataType.Float;
                tensor.FloatData.AddRange(value.Values.Select(v => (float)v));
                break;
            case TensorElementType.Double:
                tensor.DataType = (int)TensorProto.Types.DataType.Double;
                tensor.DoubleData.AddRange(value.Values);
                break;
            case TensorElementType.Int64:
                tensor.DataType = (int)TensorProto.Types.DataType.Int64;
                tensor.Int64Data.AddRange(value.Values.Select(v => (long)v));
                break;
            case TensorElementType.Int32:
                tensor.DataType = (int)TensorProto.Types.DataType.Int32;
                tensor.Int32Data.AddRange(value.Values.Select(v => (int)v));
                break;
            case TensorElementType.Bool:
                tensor.DataType = (int)TensorProto.Types.DataType.Bool;
                tensor.RawData = ByteString.CopyFrom([.. value.Values.Select(v => v != 0 ? (byte)1 : (byte)0)]);
                break;
            default:
                throw new OptimizeException($"cannot specialize '{name}' of element type {value.Type}");
        }
        return tensor;
    }
}
