using Google.Protobuf;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Graph;

/// <summary>
/// Tensors whose bytes live outside the model file (<c>data_location = EXTERNAL</c>, keys location/offset/length):
/// read into raw_data when a model is loaded, and moved into one side file when a large model is saved.
/// </summary>
internal static class ExternalData
{
    /// <summary>Tensors at least this large are placed at a 64 KiB boundary of the data file (so they can be memory-mapped).</summary>
    private const long AlignAbove = 1L << 20;

    private const long Alignment = 64L << 10;

    /// <summary>Every tensor of the model: initializers and Constant/attribute tensors, subgraphs included.</summary>
    public static IEnumerable<TensorProto> Tensors(GraphProto graph)
    {
        foreach (TensorProto initializer in graph.Initializer)
        {
            yield return initializer;
        }
        foreach (SparseTensorProto sparse in graph.SparseInitializer)
        {
            if (sparse.Values is not null)
            {
                yield return sparse.Values;
            }
            if (sparse.Indices is not null)
            {
                yield return sparse.Indices;
            }
        }
        foreach (AttributeProto attribute in graph.Node.SelectMany(n => n.Attribute))
        {
            if (attribute.T is not null)
            {
                yield return attribute.T;
            }
            foreach (TensorProto tensor in attribute.Tensors)
            {
                yield return tensor;
            }
            foreach (GraphProto subgraph in attribute.G is null ? attribute.Graphs : attribute.Graphs.Append(attribute.G))
            {
                foreach (TensorProto tensor in Tensors(subgraph))
                {
                    yield return tensor;
                }
            }
        }
    }

    public static bool IsExternal(TensorProto tensor) => tensor.DataLocation == TensorProto.Types.DataLocation.External;

    /// <summary>Reads every external tensor of <paramref name="model"/> into its raw_data, from files beside <paramref name="modelPath"/>.</summary>
    /// <exception cref="OptimizeException">A location escapes the model's folder, a file is missing or too short, or a key is malformed.</exception>
    public static void Inline(ModelProto model, string modelPath)
    {
        string folder = Path.GetFullPath(Path.GetDirectoryName(Path.GetFullPath(modelPath)) ?? ".");
        var files = new Dictionary<string, FileStream>(StringComparer.Ordinal);
        try
        {
            foreach (TensorProto tensor in Tensors(model.Graph).Where(IsExternal))
            {
                Dictionary<string, string> keys = tensor.ExternalData.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
                string what = $"{modelPath}: tensor '{tensor.Name}'";
                if (!keys.TryGetValue("location", out string? location) || location.Length == 0)
                {
                    throw new OptimizeException($"{what} is external but names no location");
                }
                string file = Path.GetFullPath(Path.Combine(folder, location));
                if (Path.IsPathRooted(location) || !file.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                {
                    throw new OptimizeException($"{what}: external data location '{location}' is outside the model's folder {folder}");
                }
                long offset = Number(keys, "offset", what) ?? 0;
                if (!files.TryGetValue(file, out FileStream? stream))
                {
                    try
                    {
                        stream = File.OpenRead(file);
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        throw new OptimizeException($"{what}: cannot read its external data {file}: {e.Message}", e);
                    }
                    files[file] = stream;
                }
                long length = Number(keys, "length", what) ?? (stream.Length - offset);
                if (offset < 0 || length < 0 || offset + length > stream.Length)
                {
                    throw new OptimizeException($"{what}: bytes {offset}..{offset + length} lie outside {file} ({stream.Length} bytes)");
                }
                if (length > Array.MaxLength)
                {
                    throw new OptimizeException($"{what}: {length} bytes is more than one array holds");
                }
                var bytes = new byte[length];
                stream.Position = offset;
                stream.ReadExactly(bytes);
                tensor.RawData = ByteString.CopyFrom(bytes);
                tensor.ExternalData.Clear();
                tensor.DataLocation = TensorProto.Types.DataLocation.Default;
            }
        }
        finally
        {
            foreach (FileStream stream in files.Values)
            {
                stream.Dispose();
            }
        }
    }

    private static long? Number(Dictionary<string, string> keys, string key, string what) =>
        !keys.TryGetValue(key, out string? text) ? null
        : long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long value) ? value
        : throw new OptimizeException($"{what}: external data {key} '{text}' is not a number");

    /// <summary>The bytes held in raw_data by initializers (and their subgraphs'), the part external data can take out.</summary>
    public static long InitializerBytes(GraphProto graph) =>
        graph.Initializer.Sum(i => (long)i.RawData.Length)
        + graph.Node.SelectMany(n => n.Attribute).SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Append(a.G)).Sum(InitializerBytes);

    /// <summary>
    /// Moves the raw_data of initializers of at least <paramref name="minimumBytes"/> (subgraphs' included) into
    /// <paramref name="dataPath"/>, written afresh, and points the tensors at it by <paramref name="location"/>.
    /// Changes <paramref name="model"/>; returns the moved tensors and their bytes, for <see cref="Restore"/>.
    /// </summary>
    public static List<(TensorProto Tensor, ByteString Bytes)> Externalize(ModelProto model, string dataPath, string location, long minimumBytes)
    {
        var moved = new List<(TensorProto, ByteString)>();
        using FileStream stream = File.Create(dataPath);
        foreach (TensorProto tensor in Initializers(model.Graph).Where(t => !IsExternal(t) && t.RawData.Length > 0 && t.RawData.Length >= minimumBytes))
        {
            long length = tensor.RawData.Length;
            if (length >= AlignAbove && stream.Position % Alignment != 0)
            {
                stream.SetLength(stream.Position + Alignment - (stream.Position % Alignment));
                stream.Position = stream.Length;
            }
            long offset = stream.Position;
            stream.Write(tensor.RawData.Span);
            moved.Add((tensor, tensor.RawData));
            tensor.RawData = ByteString.Empty;
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.Clear();
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        }
        return moved;
    }

    /// <summary>Puts back what <see cref="Externalize"/> took out.</summary>
    public static void Restore(List<(TensorProto Tensor, ByteString Bytes)> moved)
    {
        foreach ((TensorProto tensor, ByteString bytes) in moved)
        {
            tensor.ExternalData.Clear();
            tensor.DataLocation = TensorProto.Types.DataLocation.Default;
            tensor.RawData = bytes;
        }
    }

    private static IEnumerable<TensorProto> Initializers(GraphProto graph) =>
        graph.Initializer.Concat(graph.Node.SelectMany(n => n.Attribute).SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Append(a.G)).SelectMany(Initializers));
}
