using System.Collections;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Kiln.Data.Nodes;

namespace Kiln.Data;

/// <summary>
/// Writes pipeline items as JSON for <c>kiln data run</c>: text and numbers as themselves, bytes as their
/// length and SHA-256, archive members and samples by name with their fields, batches and tuples as arrays
/// (docs/data.md, "Item format").
/// </summary>
public static class ItemJson
{
    /// <summary>The JSON form of one item.</summary>
    public static JsonNode? From(object? item) => item switch
    {
        null => null,
        string s => s,
        bool b => b,
        long or int or short or byte or ulong or uint => JsonValue.Create(Convert.ToDecimal(item, System.Globalization.CultureInfo.InvariantCulture)),
        double d => d,
        float f => f,
        JsonNode node => node.DeepClone(),
        byte[] bytes => Bytes(bytes),
        TorchSharp.torch.Tensor tensor => Tensor(tensor),
        TensorBatch batch => new JsonObject { ["inputs"] = Tensor(batch.Inputs), ["labels"] = batch.Labels is null ? null : Tensor(batch.Labels) },
        LabeledImage image => new JsonObject
        {
            ["source"] = image.Source,
            ["label"] = image.Label,
            ["shape"] = new JsonArray(3, image.Height, image.Width),
            ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(image.Pixels.AsSpan()))),
        },
        Blob blob => new JsonObject { ["name"] = blob.Name, ["source"] = blob.Source, ["data"] = Bytes(blob.Data) },
        Sample sample => new JsonObject
        {
            ["key"] = sample.Key,
            ["source"] = sample.Source,
            ["fields"] = new JsonObject(sample.Fields.OrderBy(f => f.Key, StringComparer.Ordinal).Select(f => KeyValuePair.Create(f.Key, (JsonNode?)Bytes(f.Value)))),
        },
        IReadOnlyDictionary<string, string> record => new JsonObject(record.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        ITuple tuple => new JsonArray([.. Enumerable.Range(0, tuple.Length).Select(i => From(tuple[i]))]),
        IEnumerable sequence => new JsonArray([.. sequence.Cast<object?>().Select(From)]),
        _ => item.ToString(),
    };

    private static JsonObject Tensor(TorchSharp.torch.Tensor tensor)
    {
        using TorchSharp.torch.Tensor cpu = tensor.cpu().contiguous();
        var json = new JsonObject
        {
            ["shape"] = new JsonArray([.. tensor.shape.Select(d => (JsonNode)d)]),
            ["dtype"] = tensor.dtype.ToString().ToLowerInvariant(),
            ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(cpu.bytes)),
        };
        if (tensor.device_type == TorchSharp.DeviceType.CPU && tensor.is_pinned())
        {
            json["pinned"] = true;
        }
        return json;
    }

    private static JsonObject Bytes(byte[] data) => new()
    {
        ["bytes"] = data.Length,
        ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(data)),
    };
}
