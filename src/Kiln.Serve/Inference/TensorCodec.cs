using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>A float32 tensor in row-major order.</summary>
internal sealed record FloatTensor(float[] Data, long[] Shape)
{
    public static long Count(ReadOnlySpan<long> shape)
    {
        long count = 1;
        foreach (long d in shape)
        {
            count *= d;
        }
        return count;
    }

    public string ShapeText => "[" + string.Join(",", Shape) + "]";
}

/// <summary>Reads tensors from JSON (<c>{"data":[…],"shape":[…]}</c>) or NumPy <c>.npy</c> (float32) bodies; writes JSON.</summary>
internal static class TensorCodec
{
    private static ReadOnlySpan<byte> NpyMagic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static FloatTensor Read(ReadOnlySpan<byte> body, string? contentType)
    {
        if (body.StartsWith(NpyMagic))
        {
            return ReadNpy(body);
        }
        if (contentType is not null && (contentType.Contains("npy", StringComparison.OrdinalIgnoreCase) || contentType.Contains("octet-stream", StringComparison.OrdinalIgnoreCase)))
        {
            throw ServeException.BadRequest("The body is not a .npy file (it lacks the \\x93NUMPY magic); send float32 .npy or JSON {\"data\":[...],\"shape\":[...]}.");
        }
        return ReadJson(body);
    }

    private static FloatTensor ReadJson(ReadOnlySpan<byte> body)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using JsonDocument document = JsonDocument.ParseValue(ref reader);
            JsonElement root = document.RootElement;
            JsonElement data;
            long[]? shape = null;
            if (root.ValueKind == JsonValueKind.Object)
            {
                if (!root.TryGetProperty("data", out data))
                {
                    throw ServeException.BadRequest("The JSON body lacks \"data\"; send {\"data\":[...],\"shape\":[...]}.");
                }
                if (root.TryGetProperty("shape", out JsonElement shapeElement))
                {
                    if (shapeElement.ValueKind != JsonValueKind.Array)
                    {
                        throw ServeException.BadRequest("\"shape\" must be an array of non-negative integers.");
                    }
                    shape = [.. shapeElement.EnumerateArray().Select(d => d.TryGetInt64(out long v) && v >= 0 ? v : throw ServeException.BadRequest("\"shape\" must be an array of non-negative integers."))];
                }
            }
            else
            {
                data = root;
            }
            var values = new List<float>();
            var nested = new List<long>();
            Flatten(data, values, nested, 0);
            shape ??= [.. nested];
            if (Count(shape) != values.Count)
            {
                throw ServeException.BadRequest($"\"data\" holds {values.Count} numbers but shape [{string.Join(",", shape)}] needs {Count(shape)}.");
            }
            return new FloatTensor([.. values], shape);
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The body is not valid JSON: {ex.Message}", ex);
        }
    }

    private static long Count(long[] shape) => FloatTensor.Count(shape);

    private static void Flatten(JsonElement element, List<float> values, List<long> shape, int depth)
    {
        if (element.ValueKind == JsonValueKind.Number)
        {
            values.Add(element.GetSingle());
            return;
        }
        if (element.ValueKind != JsonValueKind.Array)
        {
            throw ServeException.BadRequest($"\"data\" must hold numbers or nested arrays of numbers, not {element.ValueKind}.");
        }
        int length = element.GetArrayLength();
        if (shape.Count == depth)
        {
            shape.Add(length);
        }
        else if (shape[depth] != length)
        {
            throw ServeException.BadRequest("\"data\" is a ragged nested array; every row at one depth must have the same length.");
        }
        foreach (JsonElement item in element.EnumerateArray())
        {
            Flatten(item, values, shape, depth + 1);
        }
    }

    private static FloatTensor ReadNpy(ReadOnlySpan<byte> body)
    {
        if (body.Length < 10)
        {
            throw ServeException.BadRequest("The .npy body is truncated.");
        }
        byte major = body[6];
        int headerLength;
        int offset;
        if (major == 1)
        {
            headerLength = BinaryPrimitives.ReadUInt16LittleEndian(body[8..]);
            offset = 10;
        }
        else if (major is 2 or 3 && body.Length >= 12)
        {
            headerLength = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(body[8..]));
            offset = 12;
        }
        else
        {
            throw ServeException.BadRequest($".npy format version {major} is not supported (1, 2 and 3 are).");
        }
        if (body.Length < offset + headerLength)
        {
            throw ServeException.BadRequest("The .npy body is truncated inside its header.");
        }
        string header = Encoding.ASCII.GetString(body.Slice(offset, headerLength));
        string descr = HeaderValue(header, "descr").Trim('\'', '"', ' ');
        if (descr is not ("<f4" or "float32" or "f4"))
        {
            throw ServeException.BadRequest($".npy dtype '{descr}' is not supported; send float32 ('<f4').");
        }
        if (HeaderValue(header, "fortran_order").Trim().StartsWith("True", StringComparison.Ordinal))
        {
            throw ServeException.BadRequest(".npy arrays in Fortran order are not supported; send a C-ordered array.");
        }
        string shapeText = HeaderValue(header, "shape").Trim().TrimStart('(').TrimEnd(')');
        long[] shape = [.. shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(d => long.TryParse(d, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= 0 ? v : throw ServeException.BadRequest($".npy shape ({shapeText}) is malformed."))];
        ReadOnlySpan<byte> payload = body[(offset + headerLength)..];
        long count = Count(shape);
        if (payload.Length != count * sizeof(float))
        {
            throw ServeException.BadRequest($".npy shape ({shapeText}) needs {count * sizeof(float)} data bytes; the body has {payload.Length}.");
        }
        float[] data = new float[count];
        if (BitConverter.IsLittleEndian)
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(payload).CopyTo(data);
        }
        else
        {
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = BinaryPrimitives.ReadSingleLittleEndian(payload[(i * sizeof(float))..]);
            }
        }
        return new FloatTensor(data, shape);
    }

    private static string HeaderValue(string header, string key)
    {
        int at = header.IndexOf($"'{key}'", StringComparison.Ordinal);
        if (at < 0)
        {
            throw ServeException.BadRequest($"The .npy header lacks '{key}'.");
        }
        int colon = header.IndexOf(':', at);
        int end = key == "shape" ? header.IndexOf(')', colon) + 1 : header.IndexOfAny([',', '}'], colon);
        if (colon < 0 || end <= colon)
        {
            throw ServeException.BadRequest($"The .npy header's '{key}' is malformed.");
        }
        return header[(colon + 1)..end];
    }

    /// <summary>Writes <c>{"data":[…],"shape":[…]}</c>.</summary>
    public static byte[] WriteJson(ReadOnlySpan<float> data, ReadOnlySpan<long> shape)
    {
        var buffer = new MemoryStream((data.Length * 12) + 32);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            WriteTensorBody(writer, data, shape);
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    public static void WriteTensorBody(Utf8JsonWriter writer, ReadOnlySpan<float> data, ReadOnlySpan<long> shape)
    {
        writer.WriteStartArray("data");
        foreach (float value in data)
        {
            writer.WriteNumberValue(value);
        }
        writer.WriteEndArray();
        writer.WriteStartArray("shape");
        foreach (long d in shape)
        {
            writer.WriteNumberValue(d);
        }
        writer.WriteEndArray();
    }
}
