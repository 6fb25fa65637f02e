using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using Kiln.Optimize.Onnx.Proto;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Optimize.Verification;

/// <summary>
/// Sample inputs read from a directory (<c>--calibration DIR</c>, <c>--inputs DIR</c>). One sample is either a
/// subfolder holding <c>NAME.npy</c> for each model input NAME, or a <c>.npz</c> file holding the same entries, or — for
/// a model with one input — a single <c>.npy</c> file. Samples are taken in ordinal order of their names. <c>.npy</c>
/// versions 1–3, little-endian, C order; dtypes float32, float64, int64, int32, uint8 and bool, each only for an input
/// of that element type; the shape must match the input's fixed dimensions (symbolic ones are free).
/// </summary>
internal static partial class SampleSet
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>The samples in <paramref name="directory"/>, checked against <paramref name="model"/>'s inputs.</summary>
    /// <exception cref="OptimizeException">The directory is missing or empty, or a file is not a valid sample (names the file and what was expected).</exception>
    public static List<Dictionary<string, TensorValue>> Load(string directory, OnnxModel model, int limit = int.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (!Directory.Exists(directory))
        {
            throw new OptimizeException($"{directory}: no such directory of samples");
        }
        var initializers = new HashSet<string>(model.Proto.Graph.Initializer.Select(i => i.Name), StringComparer.Ordinal);
        Dictionary<string, ValueInfoProto> inputs = model.Proto.Graph.Input.Where(i => !initializers.Contains(i.Name)).ToDictionary(i => i.Name, StringComparer.Ordinal);
        string expected = string.Join(", ", inputs.Values.Select(Describe));
        var entries = Directory.EnumerateDirectories(directory)
            .Concat(Directory.EnumerateFiles(directory).Where(f => f.EndsWith(".npz", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)))
            .Order(StringComparer.Ordinal).Take(limit).ToList();
        if (entries.Count == 0)
        {
            throw new OptimizeException($"{directory}: no samples (expected a subfolder or .npz per sample with NAME.npy for each input, or one .npy per sample for a one-input model; inputs: {expected})");
        }
        var samples = new List<Dictionary<string, TensorValue>>(entries.Count);
        foreach (string entry in entries)
        {
            var arrays = new Dictionary<string, (string File, byte[] Bytes)>(StringComparer.Ordinal);
            if (Directory.Exists(entry))
            {
                foreach (string file in Directory.EnumerateFiles(entry, "*.npy"))
                {
                    arrays[Path.GetFileNameWithoutExtension(file)] = (file, File.ReadAllBytes(file));
                }
            }
            else if (entry.EndsWith(".npz", StringComparison.OrdinalIgnoreCase))
            {
                try
                {
                    using ZipArchive zip = ZipFile.OpenRead(entry);
                    foreach (ZipArchiveEntry item in zip.Entries.Where(e => e.Name.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)))
                    {
                        using Stream stream = item.Open();
                        using var buffer = new MemoryStream();
                        stream.CopyTo(buffer);
                        arrays[Path.GetFileNameWithoutExtension(item.Name)] = ($"{entry}:{item.FullName}", buffer.ToArray());
                    }
                }
                catch (InvalidDataException e)
                {
                    throw new OptimizeException($"{entry}: not a .npz (zip) file: {e.Message}", e);
                }
            }
            else
            {
                if (inputs.Count != 1)
                {
                    throw new OptimizeException($"{entry}: a bare .npy sample only works for a model with one input; this one has {inputs.Count} ({expected}): put each sample in a subfolder or .npz with NAME.npy per input");
                }
                arrays[inputs.Keys.First()] = (entry, File.ReadAllBytes(entry));
            }
            if (inputs.Count == 1 && arrays.Count == 1 && !arrays.ContainsKey(inputs.Keys.First()))
            {
                // One input, one array: its file name need not match.
                arrays = new Dictionary<string, (string, byte[])>(StringComparer.Ordinal) { [inputs.Keys.First()] = arrays.Values.First() };
            }
            var sample = new Dictionary<string, TensorValue>(StringComparer.Ordinal);
            foreach ((string name, ValueInfoProto input) in inputs)
            {
                if (!arrays.TryGetValue(name, out var array))
                {
                    throw new OptimizeException($"{entry}: no {name}.npy for input {Describe(input)}");
                }
                sample[name] = Check(Read(array.Bytes, array.File), input, array.File);
            }
            foreach (string extra in arrays.Keys.Where(k => !inputs.ContainsKey(k)))
            {
                throw new OptimizeException($"{arrays[extra].File}: the model has no input '{extra}' (its inputs: {expected})");
            }
            samples.Add(sample);
        }
        return samples;
    }

    private static TensorValue Check(TensorValue value, ValueInfoProto input, string file)
    {
        TypeProto.Types.Tensor? type = input.Type?.TensorType;
        var elementType = (TensorElementType)(type?.ElemType ?? 0);
        var dims = type?.Shape?.Dim;
        bool shapeFits = dims is null || (dims.Count == value.Shape.Length && dims.Select((d, i) => !d.HasDimValue || d.DimValue <= 0 || d.DimValue == value.Shape[i]).All(ok => ok));
        if (elementType != value.Type || !shapeFits)
        {
            throw new OptimizeException($"{file}: input {Describe(input)} expected; the file holds {Name(value.Type)} [{string.Join(",", value.Shape)}]");
        }
        return value;
    }

    private static string Describe(ValueInfoProto input)
    {
        TypeProto.Types.Tensor? type = input.Type?.TensorType;
        string dims = type?.Shape is null ? "any shape" : "[" + string.Join(",", type.Shape.Dim.Select(d => d.HasDimValue && d.DimValue > 0 ? d.DimValue.ToString(CultureInfo.InvariantCulture) : d.DimParam.Length > 0 ? d.DimParam : "?")) + "]";
        return $"'{input.Name}' {Name((TensorElementType)(type?.ElemType ?? 0))} {dims}";
    }

    private static string Name(TensorElementType type) => type switch
    {
        TensorElementType.Float => "float32",
        TensorElementType.Double => "float64",
        TensorElementType.Int64 => "int64",
        TensorElementType.Int32 => "int32",
        TensorElementType.UInt8 => "uint8",
        TensorElementType.Bool => "bool",
        _ => type.ToString().ToLowerInvariant(),
    };

    /// <summary>Parses a <c>.npy</c> file (versions 1–3, C order, little-endian).</summary>
    /// <exception cref="OptimizeException">Not a .npy, or a layout or dtype it does not read (names the file).</exception>
    internal static TensorValue Read(byte[] bytes, string file)
    {
        if (bytes.Length < 10 || !bytes.AsSpan().StartsWith(Magic))
        {
            throw new OptimizeException($"{file}: not a .npy file (no \\x93NUMPY magic)");
        }
        int major = bytes[6];
        int headerLength, offset;
        switch (major)
        {
            case 1:
                headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
                offset = 10;
                break;
            case 2 or 3 when bytes.Length >= 12:
                headerLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(8));
                offset = 12;
                break;
            default:
                throw new OptimizeException($"{file}: .npy format version {major} (1, 2 and 3 are read)");
        }
        if (offset + headerLength > bytes.Length)
        {
            throw new OptimizeException($"{file}: truncated inside its .npy header");
        }
        string header = Encoding.UTF8.GetString(bytes, offset, headerLength);
        Match descr = DescrPattern().Match(header), order = OrderPattern().Match(header), shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !order.Success || !shapeMatch.Success)
        {
            throw new OptimizeException($"{file}: cannot read the .npy header {header.Trim()}");
        }
        if (order.Groups[1].Value == "True")
        {
            throw new OptimizeException($"{file}: Fortran-order array; save it in C order (numpy.ascontiguousarray)");
        }
        long[] shape = [.. shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(d => long.Parse(d, CultureInfo.InvariantCulture))];
        long count = shape.Aggregate(1L, (a, b) => a * b);
        string dtype = descr.Groups[1].Value;
        (TensorElementType type, int size) = dtype switch
        {
            "<f4" => (TensorElementType.Float, 4),
            "<f8" => (TensorElementType.Double, 8),
            "<i8" => (TensorElementType.Int64, 8),
            "<i4" => (TensorElementType.Int32, 4),
            "|u1" or "<u1" => (TensorElementType.UInt8, 1),
            "|b1" => (TensorElementType.Bool, 1),
            _ => throw new OptimizeException($"{file}: dtype '{dtype}' (read: little-endian float32 <f4, float64 <f8, int64 <i8, int32 <i4, uint8 |u1, bool |b1)"),
        };
        ReadOnlySpan<byte> data = bytes.AsSpan(offset + headerLength);
        if (data.Length < count * size)
        {
            throw new OptimizeException($"{file}: {data.Length} bytes of data; shape [{string.Join(",", shape)}] of {dtype} needs {count * size}");
        }
        var values = new double[count];
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> v = data[(i * size)..];
            values[i] = type switch
            {
                TensorElementType.Float => BinaryPrimitives.ReadSingleLittleEndian(v),
                TensorElementType.Double => BinaryPrimitives.ReadDoubleLittleEndian(v),
                TensorElementType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(v),
                TensorElementType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(v),
                _ => v[0],
            };
        }
        return new TensorValue(type, shape, values);
    }

    /// <summary>Writes a float32 (or int64) array as a version 1 <c>.npy</c> file.</summary>
    internal static void Write(string path, TensorValue value)
    {
        (string dtype, int size) = value.Type switch
        {
            TensorElementType.Float => ("<f4", 4),
            TensorElementType.Int64 => ("<i8", 8),
            _ => throw new OptimizeException($"writing {value.Type} .npy files is not supported"),
        };
        string shape = value.Shape.Length == 1 ? $"({value.Shape[0]},)" : "(" + string.Join(", ", value.Shape) + ")";
        string header = $"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}";
        int padded = ((10 + header.Length + 1 + 63) / 64 * 64) - 10;
        header = header.PadRight(padded - 1) + "\n";
        using FileStream stream = File.Create(path);
        stream.Write(Magic);
        stream.Write([1, 0]);
        Span<byte> length = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(length, (ushort)header.Length);
        stream.Write(length);
        stream.Write(Encoding.ASCII.GetBytes(header));
        var data = new byte[value.Values.Length * size];
        for (int i = 0; i < value.Values.Length; i++)
        {
            if (size == 4)
            {
                BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(i * 4), (float)value.Values[i]);
            }
            else
            {
                BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(i * 8), (long)value.Values[i]);
            }
        }
        stream.Write(data);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex OrderPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
