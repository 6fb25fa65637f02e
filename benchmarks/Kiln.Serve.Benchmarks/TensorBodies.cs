using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Kiln.Serve.Benchmarks;

/// <summary>Request bodies for the <c>tensor</c> handler (JSON or NumPy <c>.npy</c>) and reading its JSON answers.</summary>
internal static class TensorBodies
{
    public static byte[] Json(float[] data, long[] shape)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteStartArray("data");
            foreach (float value in data)
            {
                writer.WriteNumberValue(value);
            }
            writer.WriteEndArray();
            writer.WriteStartArray("shape");
            foreach (long dim in shape)
            {
                writer.WriteNumberValue(dim);
            }
            writer.WriteEndArray();
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>A version 1.0 <c>.npy</c> file: magic, header dictionary padded to 64 bytes, little-endian float32 data.</summary>
    public static byte[] Npy(float[] data, long[] shape)
    {
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int padded = ((10 + header.Length + 1 + 63) / 64 * 64) - 10;
        header = header.PadRight(padded - 1) + "\n";
        byte[] body = new byte[10 + header.Length + (data.Length * sizeof(float))];
        body[0] = 0x93;
        Encoding.ASCII.GetBytes("NUMPY").CopyTo(body, 1);
        body[6] = 1;
        body[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(body.AsSpan(8), (ushort)header.Length);
        Encoding.ASCII.GetBytes(header).CopyTo(body, 10);
        Span<byte> payload = body.AsSpan(10 + header.Length);
        for (int i = 0; i < data.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(payload[(i * sizeof(float))..], data[i]);
        }
        return body;
    }

    /// <summary>The first output of a <c>tensor</c> handler answer: <c>{"data","shape"}</c>, or the first of <c>{"name":{"data","shape"},…}</c>.</summary>
    public static float[] ReadFirstOutput(string json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        JsonElement tensor = root.TryGetProperty("data", out _) ? root : root.EnumerateObject().First().Value;
        return [.. tensor.GetProperty("data").EnumerateArray().Select(v => v.GetSingle())];
    }

    /// <summary>Largest |a-b| over the largest |b| (or 1 when the values are small).</summary>
    public static double RelativeDifference(float[] a, float[] b)
    {
        if (a.Length != b.Length)
        {
            return double.PositiveInfinity;
        }
        double scale = Math.Max(1, b.Length == 0 ? 1 : b.Max(v => Math.Abs(v)));
        double worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        return worst / scale;
    }
}
