using Google.Protobuf;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Tests;

/// <summary>Builds small float32 ONNX graphs for the tests (opset 17, IR 8).</summary>
internal sealed class GraphBuilder
{
    private readonly GraphProto _graph = new() { Name = "test" };

    public GraphBuilder Input(string name, params long[] shape)
    {
        _graph.Input.Add(Value(name, shape));
        return this;
    }

    public GraphBuilder Int64Input(string name, params long[] shape)
    {
        ValueInfoProto value = Value(name, shape);
        value.Type.TensorType.ElemType = (int)TensorProto.Types.DataType.Int64;
        _graph.Input.Add(value);
        return this;
    }

    public GraphBuilder Output(string name, params long[] shape)
    {
        _graph.Output.Add(Value(name, shape));
        return this;
    }

    public GraphBuilder Initializer(string name, long[] shape, params float[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        tensor.Dims.AddRange(shape);
        tensor.RawData = ByteString.CopyFrom([.. values.SelectMany(BitConverter.GetBytes)]);
        _graph.Initializer.Add(tensor);
        return this;
    }

    public GraphBuilder Int64Initializer(string name, long[] shape, params long[] values)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        tensor.Dims.AddRange(shape);
        tensor.RawData = ByteString.CopyFrom([.. values.SelectMany(BitConverter.GetBytes)]);
        _graph.Initializer.Add(tensor);
        return this;
    }

    /// <summary>Declares the shape of an intermediate value (value_info).</summary>
    public GraphBuilder ValueInfo(string name, params long[] shape)
    {
        _graph.ValueInfo.Add(Value(name, shape));
        return this;
    }

    /// <summary>Adds an attribute to the node added last.</summary>
    public GraphBuilder Attribute(string name, float value) => Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value });

    public GraphBuilder Attribute(string name, long value) => Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });

    public GraphBuilder Attribute(string name, long[] values) => Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { values } });

    public GraphBuilder Attribute(string name, string value) => Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(value) });

    public GraphBuilder Attribute(string name, TensorProto value) => Attribute(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value });

    public GraphBuilder Node(string op, string[] inputs, string[] outputs, string? name = null)
    {
        var node = new NodeProto { OpType = op, Name = name ?? $"{op}_{_graph.Node.Count}" };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        _graph.Node.Add(node);
        return this;
    }

    private GraphBuilder Attribute(AttributeProto attribute)
    {
        _graph.Node[^1].Attribute.Add(attribute);
        return this;
    }

    public OnnxModel Build()
    {
        var model = new ModelProto { IrVersion = 8, ProducerName = "kiln-tests", Graph = _graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        return OnnxModel.FromBytes(model.ToByteArray(), "test.onnx");
    }

    private static ValueInfoProto Value(string name, long[] shape)
    {
        var tensor = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto() };
        tensor.Shape.Dim.AddRange(shape.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tensor } };
    }
}
