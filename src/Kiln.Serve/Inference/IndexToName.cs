using System.Globalization;
using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>
/// Reads an archive's <c>index_to_name.json</c>: <c>{"0":"tench",…}</c>, <c>{"0":["n01440764","tench"],…}</c> (the
/// last element is the label, as TorchServe takes it), <c>{"object_type_names":["__background__",…]}</c> (older
/// TorchServe examples) or a plain list <c>["tench",…]</c>.
/// </summary>
internal static class IndexToName
{
    public const string FileName = "index_to_name.json";

    /// <summary>
    /// The labels by class index; null when the archive has none. Object keys parse with <paramref name="keyStyle"/>
    /// and may be at most <paramref name="maxKey"/>; <paramref name="keyHint"/> ends the message for a key that does not.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: the file is not such JSON.</exception>
    public static Dictionary<long, string>? Read(HandlerContext context, NumberStyles keyStyle = NumberStyles.Integer, long maxKey = long.MaxValue, string keyHint = "")
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.ExtraFile(FileName) is not { } path)
        {
            return null;
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
            var labels = new Dictionary<long, string>();
            JsonElement root = document.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("object_type_names", out JsonElement names) && names.ValueKind == JsonValueKind.Array)
            {
                root = names; // older TorchServe examples: {"object_type_names": ["__background__", "person", …]}
            }
            if (root.ValueKind == JsonValueKind.Object)
            {
                foreach (JsonProperty entry in root.EnumerateObject())
                {
                    if (!long.TryParse(entry.Name, keyStyle, CultureInfo.InvariantCulture, out long index) || index > maxKey)
                    {
                        throw new ServeException(400, "ModelException", $"{FileName}: key \"{entry.Name}\" is not a class index{keyHint}.");
                    }
                    labels[index] = Label(entry.Value, entry.Name);
                }
            }
            else if (root.ValueKind == JsonValueKind.Array)
            {
                int index = 0;
                foreach (JsonElement entry in root.EnumerateArray())
                {
                    labels[index] = Label(entry, index.ToString(CultureInfo.InvariantCulture));
                    index++;
                }
            }
            else
            {
                throw new ServeException(400, "ModelException", $"{FileName} must be an object {{\"0\": \"label\", …}} or a list of labels.");
            }
            return labels;
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "ModelException", $"{FileName} is not valid JSON: {ex.Message}", ex);
        }
    }

    private static string Label(JsonElement value, string key) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString()!,
        JsonValueKind.Number => value.GetRawText(),
        JsonValueKind.Array when value.GetArrayLength() > 0 => Label(value[value.GetArrayLength() - 1], key),
        _ => throw new ServeException(400, "ModelException", $"{FileName}: the label of class {key} is neither a string nor a list ending in one."),
    };
}
