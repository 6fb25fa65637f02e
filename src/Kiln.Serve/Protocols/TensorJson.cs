using System.Text.Json;
using Kiln.Serve.Inference;

namespace Kiln.Serve.Protocols;

/// <summary>Tensor conversions shared by the KServe protocols: nested JSON arrays, <c>.npy</c> jobs and handler results.</summary>
internal static class TensorJson
{
    /// <summary>Reads a number array, flat or nested, into <paramref name="values"/>; returns its nested shape.</summary>
    /// <exception cref="ServeException">400 when it is ragged or holds something other than numbers.</exception>
    public static long[] Flatten(JsonElement element, List<float> values, string what)
    {
        var shape = new List<long>();
        JsonElement probe = element;
        while (probe.ValueKind == JsonValueKind.Array)
        {
            shape.Add(probe.GetArrayLength());
            if (probe.GetArrayLength() == 0)
            {
                break;
            }
            probe = probe[0];
        }
        Fill(element, 0, shape, values, what);
        return [.. shape];
    }

    private static void Fill(JsonElement element, int depth, List<long> shape, List<float> values, string what)
    {
        if (depth == shape.Count)
        {
            if (element.ValueKind != JsonValueKind.Number || !element.TryGetSingle(out float value) || !float.IsFinite(value))
            {
                throw ServeException.BadRequest($"{what} holds {element.ValueKind} where an FP32 number belongs.");
            }
            values.Add(value);
            return;
        }
        if (element.ValueKind != JsonValueKind.Array || element.GetArrayLength() != shape[depth])
        {
            throw ServeException.BadRequest($"{what} is a ragged array: every row at depth {depth} must have {shape[depth]} entries.");
        }
        foreach (JsonElement item in element.EnumerateArray())
        {
            Fill(item, depth + 1, shape, values, what);
        }
    }

    /// <summary>KServe v1's <c>{"instances":[…]}</c>: the instances stacked along a new first dimension.</summary>
    public static FloatTensor ParseInstances(byte[] body, ModelBackend model)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind != JsonValueKind.Object || !document.RootElement.TryGetProperty("instances", out JsonElement instances)
                || instances.ValueKind != JsonValueKind.Array || instances.GetArrayLength() == 0)
            {
                throw ServeException.BadRequest("The body must be {\"instances\":[...]} with at least one instance.");
            }
            var values = new List<float>();
            long[] shape = Flatten(instances, values, $"\"instances\" (input '{model.InputName}')");
            return new FloatTensor([.. values], shape);
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The body is not valid JSON: {ex.Message}", ex);
        }
    }

    /// <summary>Writes <paramref name="data"/> as nested arrays of <paramref name="shape"/>.</summary>
    public static void WriteNested(Utf8JsonWriter writer, ReadOnlySpan<float> data, ReadOnlySpan<long> shape)
    {
        if (shape.Length == 0)
        {
            writer.WriteNumberValue(data[0]);
            return;
        }
        writer.WriteStartArray();
        int stride = shape[0] == 0 ? 0 : data.Length / (int)shape[0];
        for (int i = 0; i < shape[0]; i++)
        {
            WriteNested(writer, data.Slice(i * stride, stride), shape[1..]);
        }
        writer.WriteEndArray();
    }

    /// <summary>Floats as little-endian bytes (the binary tensor extension's and <c>.npy</c>'s layout).</summary>
    public static byte[] Little(float[] data)
    {
        byte[] bytes = new byte[data.Length * sizeof(float)];
        for (int i = 0; i < data.Length; i++)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), data[i]);
        }
        return bytes;
    }

    /// <summary>Little-endian bytes as floats.</summary>
    public static float[] FromLittle(ReadOnlySpan<byte> bytes)
    {
        float[] data = new float[bytes.Length / sizeof(float)];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(bytes[(i * sizeof(float))..]);
        }
        return data;
    }
}
