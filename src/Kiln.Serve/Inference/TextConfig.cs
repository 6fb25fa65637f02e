using System.Globalization;
using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>The text handlers' settings: model-config.yaml top-level keys, and the Hugging Face JSON files an archive may carry.</summary>
internal static class TextConfig
{
    /// <summary>A model-config.yaml integer key of at least <paramref name="minimum"/>; null when absent.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: present but not such an integer.</exception>
    public static int? Int(HandlerContext context, string key, int minimum)
    {
        if (!context.Archive.Config.TryGetValue(key, out string? text))
        {
            return null;
        }
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= minimum
            ? value
            : throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be an integer of at least {minimum}; it is \"{text}\".");
    }

    /// <summary>A model-config.yaml boolean key (<c>true</c>/<c>false</c>); null when absent.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: present but not a boolean.</exception>
    public static bool? Bool(HandlerContext context, string key)
    {
        if (!context.Archive.Config.TryGetValue(key, out string? text))
        {
            return null;
        }
        return bool.TryParse(text, out bool value)
            ? value
            : throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be true or false; it is \"{text}\".");
    }

    /// <summary>A model-config.yaml string key, one of <paramref name="allowed"/> when given; null when absent.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: not one of the allowed values.</exception>
    public static string? String(HandlerContext context, string key, params string[] allowed)
    {
        if (!context.Archive.Config.TryGetValue(key, out string? text) || text.Length == 0)
        {
            return null;
        }
        if (allowed.Length > 0 && !allowed.Contains(text, StringComparer.Ordinal))
        {
            throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be one of {string.Join(", ", allowed)}; it is \"{text}\".");
        }
        return text;
    }

    /// <summary>The root object of a JSON extra file of the archive; null when the archive has no such file.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: the file is not a JSON object.</exception>
    public static JsonDocument? JsonFile(HandlerContext context, string name)
    {
        if (context.ExtraFile(name) is not { } path)
        {
            return null;
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "ModelException", $"{name} is not valid JSON: {ex.Message}", ex);
        }
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            document.Dispose();
            throw new ServeException(400, "ModelException", $"{name} must hold a JSON object.");
        }
        return document;
    }

    /// <summary>A boolean property of a JSON object; null when absent or JSON null.</summary>
    public static bool? JsonBool(JsonDocument? document, string property) =>
        document is not null && document.RootElement.TryGetProperty(property, out JsonElement value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? value.GetBoolean()
            : null;

    /// <summary>A positive integer property of a JSON object no larger than <paramref name="maximum"/>; null otherwise (Hugging Face writes 1e30 for "no limit").</summary>
    public static int? JsonInt(JsonDocument? document, string property, int maximum) =>
        document is not null && document.RootElement.TryGetProperty(property, out JsonElement value) && value.ValueKind == JsonValueKind.Number
            && value.TryGetDouble(out double number) && number >= 1 && number <= maximum && number == Math.Floor(number)
            ? (int)number
            : null;
}
