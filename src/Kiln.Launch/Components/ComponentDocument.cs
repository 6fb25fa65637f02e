using System.Text.Json;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Kiln.Launch.Components;

/// <summary>
/// Reads a component file into a plain tree: mappings as <see cref="Dictionary{TKey, TValue}"/> of string to node (in file
/// order), lists as <see cref="List{T}"/>, scalars as strings (JSON numbers and booleans by their text), nulls as null.
/// </summary>
internal static class ComponentDocument
{
    /// <summary>Reads JSON (comments and trailing commas allowed) or YAML (by the file's extension).</summary>
    /// <exception cref="LaunchException">The file cannot be read or parsed, or has a duplicate key.</exception>
    public static object? Read(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LaunchException($"component file {path}: cannot be read: {e.Message}", e);
        }
        return path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? ParseJson(text, path) : ParseYaml(text, path);
    }

    /// <summary>Parses JSON text.</summary>
    public static object? ParseJson(string text, string path)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return FromJson(document.RootElement, path, "");
        }
        catch (JsonException e)
        {
            throw new LaunchException($"component file {path}: not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Parses YAML text (one document; anchors and aliases allowed).</summary>
    public static object? ParseYaml(string text, string path)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new LaunchException($"component file {path}: not valid YAML at line {e.Start.Line}, column {e.Start.Column}: {e.InnerException?.Message ?? e.Message}", e);
        }
        if (stream.Documents.Count != 1)
        {
            throw new LaunchException($"component file {path}: holds {stream.Documents.Count} YAML documents; a component file holds one");
        }
        return FromYaml(stream.Documents[0].RootNode, path, "");
    }

    private static object? FromJson(JsonElement element, string path, string at)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (JsonProperty property in element.EnumerateObject())
                {
                    if (!map.TryAdd(property.Name, FromJson(property.Value, path, Join(at, property.Name))))
                    {
                        throw new LaunchException($"component file {path}: key '{Join(at, property.Name)}' appears twice");
                    }
                }
                return map;
            case JsonValueKind.Array:
                return element.EnumerateArray().Select((e, i) => FromJson(e, path, $"{at}[{i}]")).ToList();
            case JsonValueKind.String:
                return element.GetString();
            case JsonValueKind.Null:
            case JsonValueKind.Undefined:
                return null;
            default:
                return element.GetRawText();
        }
    }

    private static object? FromYaml(YamlNode node, string path, string at)
    {
        switch (node)
        {
            case YamlMappingNode mapping:
                var map = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (KeyValuePair<YamlNode, YamlNode> pair in mapping.Children)
                {
                    if (pair.Key is not YamlScalarNode { Value: { } key })
                    {
                        throw new LaunchException($"component file {path}: line {pair.Key.Start.Line}: keys are plain strings");
                    }
                    if (!map.TryAdd(key, FromYaml(pair.Value, path, Join(at, key))))
                    {
                        throw new LaunchException($"component file {path}: line {pair.Key.Start.Line}: key '{Join(at, key)}' appears twice");
                    }
                }
                return map;
            case YamlSequenceNode sequence:
                return sequence.Children.Select((c, i) => FromYaml(c, path, $"{at}[{i}]")).ToList();
            case YamlScalarNode scalar:
                return scalar.Style == ScalarStyle.Plain && scalar.Value is null or "" or "~" or "null" or "Null" or "NULL" ? null : scalar.Value ?? "";
            default:
                throw new LaunchException($"component file {path}: line {node.Start.Line}: unsupported YAML node at '{at}'");
        }
    }

    private static string Join(string at, string key) => at.Length == 0 ? key : at + "." + key;
}
