using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>Reads a node's parameters with types and ranges, collecting every error instead of stopping at the first.</summary>
internal sealed class NodeParameters
{
    private readonly JsonObject _values;
    private readonly string _node;
    private readonly List<string> _errors;
    private readonly HashSet<string> _read = ["on_error"];

    internal NodeParameters(string node, JsonObject values, List<string> errors)
    {
        // Re-parsed so that numbers built in code (int-backed) read like numbers read from a file.
        (_node, _values, _errors) = (node, JsonNode.Parse(values.ToJsonString())!.AsObject(), errors);
    }

    /// <summary>Records a problem with this node.</summary>
    public void Error(string message)
    {
        _errors.Add($"node '{_node}': {message}");
        Failed = true;
    }

    /// <summary>True once a problem with this node has been recorded.</summary>
    public bool Failed { get; private set; }

    /// <summary>A string parameter.</summary>
    public string? String(string name, string? fallback = null, bool required = false) =>
        Read(name, required, fallback, v => v is JsonValue j && j.TryGetValue(out string? s) ? s : throw new FormatException("a string"));

    /// <summary>An integer parameter within [min, max].</summary>
    public long Long(string name, long fallback = 0, bool required = false, long min = long.MinValue, long max = long.MaxValue)
    {
        long value = Read(name, required, fallback, v => v is JsonValue j && (j.TryGetValue(out long l) || (j.TryGetValue(out double d) && d == Math.Floor(d) && (l = (long)d) == d)) ? l : throw new FormatException("an integer"));
        if (value < min || value > max)
        {
            Error($"parameter \"{name}\" is {value}; it must be {(max == long.MaxValue ? $"at least {min}" : $"between {min} and {max}")}");
        }
        return value;
    }

    /// <summary>An int parameter within [min, max].</summary>
    public int Int(string name, int fallback = 0, bool required = false, int min = int.MinValue, int max = int.MaxValue) =>
        (int)Long(name, fallback, required, min, max);

    /// <summary>A number parameter.</summary>
    public double Double(string name, double fallback = 0, bool required = false) =>
        Read(name, required, fallback, v => v is JsonValue j && j.TryGetValue(out double d) ? d : throw new FormatException("a number"));

    /// <summary>A true/false parameter.</summary>
    public bool Bool(string name, bool fallback = false) =>
        Read(name, false, fallback, v => v is JsonValue j && j.TryGetValue(out bool b) ? b : throw new FormatException("true or false"));

    /// <summary>A list-of-strings parameter (a single string is taken as a list of one).</summary>
    public string[] Strings(string name, bool required = false) =>
        Read(name, required, Array.Empty<string>(), v => v switch
        {
            JsonValue j when j.TryGetValue(out string? s) => [s],
            JsonArray a => [.. a.Select(x => x is JsonValue e && e.TryGetValue(out string? s) ? s : throw new FormatException("a list of strings"))],
            _ => throw new FormatException("a list of strings"),
        });

    /// <summary>A list-of-numbers parameter.</summary>
    public double[] Doubles(string name, bool required = false) =>
        Read(name, required, Array.Empty<double>(), v => v is JsonArray a
            ? [.. a.Select(x => x is JsonValue e && e.TryGetValue(out double d) ? d : throw new FormatException("a list of numbers"))]
            : throw new FormatException("a list of numbers"));

    /// <summary>One of a fixed set of words.</summary>
    public string Choice(string name, string fallback, params string[] choices)
    {
        string value = String(name, fallback) ?? fallback;
        if (!choices.Contains(value))
        {
            Error($"parameter \"{name}\" is \"{value}\"; it must be one of {string.Join(", ", choices.Select(c => $"\"{c}\""))}");
        }
        return value;
    }

    /// <summary>The raw JSON of a parameter, or null.</summary>
    public JsonNode? Raw(string name)
    {
        _read.Add(name);
        return _values[name];
    }

    /// <summary>The node's error policy ("on_error": "fail" or "skip").</summary>
    internal ErrorPolicy OnError => Choice("on_error", "fail", "fail", "skip") == "skip" ? ErrorPolicy.Skip : ErrorPolicy.Fail;

    /// <summary>Records every parameter the node's type did not read.</summary>
    internal void CheckUnknown()
    {
        foreach (string key in _values.Select(p => p.Key).Where(k => !_read.Contains(k)))
        {
            Error($"unknown parameter \"{key}\" (this node type takes {string.Join(", ", _read.Order().Select(r => $"\"{r}\""))})");
        }
    }

    private TValue Read<TValue>(string name, bool required, TValue fallback, Func<JsonNode?, TValue> convert)
    {
        _read.Add(name);
        if (!_values.TryGetPropertyValue(name, out JsonNode? node) || node is null)
        {
            if (required)
            {
                Error($"parameter \"{name}\" is required");
            }
            return fallback;
        }
        try
        {
            return convert(node);
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException)
        {
            Error($"parameter \"{name}\" is {node.ToJsonString()}; it must be {ex.Message}");
            return fallback;
        }
    }
}
