using System.Buffers.Binary;
using Google.Protobuf;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Graph;

/// <summary>Reads and writes float initializers, and finds initializers and value shapes by name.</summary>
internal static class Initializers
{
    public static TensorProto? Find(GraphProto graph, string name) => graph.Initializer.FirstOrDefault(i => i.Name == name);

    /// <summary>An initializer that a runtime input cannot override: from IR 4 on, one also listed among the graph inputs can be.</summary>
    public static TensorProto? FindConstant(ModelProto model, string name) =>
        name.Length == 0 || (model.IrVersion >= 4 && model.Graph.Input.Any(i => i.Name == name)) ? null : Find(model.Graph, name);

    /// <summary>Adds an initializer; before IR 4 every initializer must also be a graph input.</summary>
    public static void Add(ModelProto model, TensorProto tensor)
    {
        model.Graph.Initializer.Add(tensor);
        if (model.IrVersion < 4)
        {
            var type = new TypeProto.Types.Tensor { ElemType = tensor.DataType, Shape = new TensorShapeProto() };
            type.Shape.Dim.AddRange(tensor.Dims.Select(d => new TensorShapeProto.Types.Dimension { DimValue = d }));
            model.Graph.Input.Add(new ValueInfoProto { Name = tensor.Name, Type = new TypeProto { TensorType = type } });
        }
    }

    public static long ElementCount(TensorProto tensor) => tensor.Dims.Aggregate(1L, (a, b) => a * b);

    /// <summary>The values of a float32 tensor held in raw_data (little-endian) or float_data; null for anything else (other types, external data).</summary>
    public static float[]? ReadFloats(TensorProto tensor)
    {
        if (tensor.DataType != (int)TensorProto.Types.DataType.Float || tensor.DataLocation == TensorProto.Types.DataLocation.External || tensor.ExternalData.Count > 0)
        {
            return null;
        }
        long count = ElementCount(tensor);
        if (!tensor.RawData.IsEmpty)
        {
            ReadOnlySpan<byte> raw = tensor.RawData.Span;
            if (raw.Length != count * sizeof(float))
            {
                return null;
            }
            var values = new float[count];
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = BinaryPrimitives.ReadSingleLittleEndian(raw[(i * sizeof(float))..]);
            }
            return values;
        }
        return tensor.FloatData.Count == count ? [.. tensor.FloatData] : null;
    }

    public static TensorProto FloatTensor(string name, IEnumerable<long> dims, float[] values)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
        }
        var tensor = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(bytes) };
        tensor.Dims.AddRange(dims);
        return tensor;
    }

    /// <summary><paramref name="stem"/>, or stem_2, stem_3… whichever no value, initializer or input of the graph has.</summary>
    public static string UniqueName(GraphProto graph, string stem) => new NameScope(graph).Next(stem);

    /// <summary>The declared rank and dims (0 or less where unknown) of a value, from graph inputs, outputs, value_info or initializers.</summary>
    public static long[]? Shape(GraphProto graph, string name)
    {
        if (Find(graph, name) is TensorProto initializer)
        {
            return [.. initializer.Dims];
        }
        ValueInfoProto? info = graph.Input.Concat(graph.ValueInfo).Concat(graph.Output).FirstOrDefault(v => v.Name == name);
        TensorShapeProto? shape = info?.Type?.TensorType?.Shape;
        return shape is null ? null : [.. shape.Dim.Select(d => d.HasDimValue ? d.DimValue : -1)];
    }

    /// <summary>Removes those of <paramref name="candidates"/> that are initializers nothing reads any more (subgraphs and graph outputs count as readers).</summary>
    public static void RemoveUnread(GraphProto graph, IEnumerable<string> candidates)
    {
        var names = new HashSet<string>(candidates, StringComparer.Ordinal);
        if (names.Count == 0)
        {
            return;
        }
        var read = new HashSet<string>(graph.Node.SelectMany(Reads), StringComparer.Ordinal);
        read.UnionWith(graph.Output.Select(o => o.Name));
        foreach (TensorProto initializer in graph.Initializer.Where(i => names.Contains(i.Name) && !read.Contains(i.Name)).ToList())
        {
            graph.Initializer.Remove(initializer);
            foreach (ValueInfoProto input in graph.Input.Where(i => i.Name == initializer.Name).ToList())
            {
                graph.Input.Remove(input);
            }
        }
    }

    private static IEnumerable<string> Reads(NodeProto node) =>
        node.Input.Concat(node.Attribute.SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Append(a.G)).SelectMany(g => g.Node).SelectMany(Reads));

    /// <summary>Removes the value_info entry of a value that no longer exists.</summary>
    public static void ForgetValue(GraphProto graph, string name)
    {
        foreach (ValueInfoProto info in graph.ValueInfo.Where(v => v.Name == name).ToList())
        {
            graph.ValueInfo.Remove(info);
        }
    }
}
