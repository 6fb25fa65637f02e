using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>One node of a graph spec: its id, type, inputs (node ids, or "fork:1" for an output port) and parameters.</summary>
public sealed record NodeSpec(string Id, string Type, IReadOnlyList<string> Inputs, JsonObject Parameters)
{
    /// <summary>The node as JSON: {"id", "type", "inputs", "params"}.</summary>
    public JsonObject ToJson()
    {
        var node = new JsonObject { ["id"] = Id, ["type"] = Type };
        if (Inputs.Count > 0)
        {
            node["inputs"] = new JsonArray([.. Inputs.Select(i => (JsonNode)i)]);
        }
        if (Parameters.Count > 0)
        {
            node["params"] = Parameters.DeepClone();
        }
        return node;
    }
}

/// <summary>
/// A pipeline graph as data: versioned JSON naming each node's type, inputs and parameters, and the output
/// node. Load, print, rewrite and save it; <see cref="DataGraph.Build"/> checks it and makes the nodes.
/// </summary>
/// <remarks>Immutable: the rewrite methods return a new spec.</remarks>
public sealed class GraphSpec
{
    /// <summary>The spec format version this build reads and writes.</summary>
    public const int CurrentVersion = 1;

    private static readonly JsonSerializerOptions s_write = new() { WriteIndented = true };

    /// <summary>Creates a spec from its nodes and the id of the node whose items the pipeline yields.</summary>
    public GraphSpec(IReadOnlyList<NodeSpec> nodes, string output, int version = CurrentVersion)
    {
        Nodes = nodes;
        Output = output;
        Version = version;
    }

    /// <summary>The format version.</summary>
    public int Version { get; }

    /// <summary>The nodes, in the order they were written.</summary>
    public IReadOnlyList<NodeSpec> Nodes { get; }

    /// <summary>The id of the node whose items the pipeline yields.</summary>
    public string Output { get; }

    /// <summary>Reads a spec from JSON text; every structural error is listed at once.</summary>
    /// <param name="json">The spec.</param>
    /// <param name="source">A file name for the messages.</param>
    /// <exception cref="GraphSpecException">The JSON is not a spec; the message lists every problem.</exception>
    public static GraphSpec Parse(string json, string source = "spec")
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException ex)
        {
            throw new GraphSpecException(source, [$"not valid JSON: {ex.Message}"]);
        }
        var errors = new List<string>();
        if (root is not JsonObject obj)
        {
            throw new GraphSpecException(source, ["the spec must be a JSON object with \"version\", \"output\" and \"nodes\""]);
        }
        int version = obj["version"] is JsonValue v && v.TryGetValue(out int parsed) ? parsed : -1;
        if (version != CurrentVersion)
        {
            errors.Add($"\"version\" must be {CurrentVersion} (found {obj["version"]?.ToJsonString() ?? "nothing"})");
        }
        string output = obj["output"] is JsonValue o && o.TryGetValue(out string? text) ? text : "";
        if (output.Length == 0)
        {
            errors.Add("\"output\" must name the node whose items the pipeline yields");
        }
        var nodes = new List<NodeSpec>();
        if (obj["nodes"] is not JsonArray array)
        {
            errors.Add("\"nodes\" must be an array");
        }
        else
        {
            for (int i = 0; i < array.Count; i++)
            {
                if (array[i] is not JsonObject n)
                {
                    errors.Add($"nodes[{i}]: must be an object");
                    continue;
                }
                string id = n["id"] is JsonValue idv && idv.TryGetValue(out string? s) ? s : "";
                string type = n["type"] is JsonValue tv && tv.TryGetValue(out string? t) ? t : "";
                string where = id.Length > 0 ? $"node '{id}'" : $"nodes[{i}]";
                if (id.Length == 0)
                {
                    errors.Add($"{where}: \"id\" is missing");
                }
                if (type.Length == 0)
                {
                    errors.Add($"{where}: \"type\" is missing");
                }
                var inputs = new List<string>();
                if (n["inputs"] is JsonArray ins)
                {
                    foreach (JsonNode? input in ins)
                    {
                        if (input is JsonValue iv && iv.TryGetValue(out string? name))
                        {
                            inputs.Add(name);
                        }
                        else
                        {
                            errors.Add($"{where}: \"inputs\" must be an array of node ids");
                        }
                    }
                }
                else if (n["inputs"] is not null)
                {
                    errors.Add($"{where}: \"inputs\" must be an array of node ids");
                }
                JsonObject parameters = n["params"] as JsonObject ?? [];
                if (n["params"] is not null and not JsonObject)
                {
                    errors.Add($"{where}: \"params\" must be an object");
                }
                foreach (string key in n.Select(p => p.Key).Where(k => k is not ("id" or "type" or "inputs" or "params")))
                {
                    errors.Add($"{where}: unknown field \"{key}\" (a node has id, type, inputs, params)");
                }
                nodes.Add(new NodeSpec(id, type, inputs, (JsonObject)parameters.DeepClone()));
            }
        }
        if (errors.Count > 0)
        {
            throw new GraphSpecException(source, errors);
        }
        return new GraphSpec(nodes, output, version);
    }

    /// <summary>Reads a spec file.</summary>
    /// <exception cref="GraphSpecException">The file is not a valid spec (the message names the file).</exception>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public static GraphSpec Load(string path) => Parse(File.ReadAllText(path), path);

    /// <summary>The spec as JSON.</summary>
    public JsonObject ToJson() => new()
    {
        ["version"] = Version,
        ["output"] = Output,
        ["nodes"] = new JsonArray([.. Nodes.Select(n => (JsonNode)n.ToJson())]),
    };

    /// <summary>The spec as indented JSON text.</summary>
    public string ToJsonString() => ToJson().ToJsonString(s_write);

    /// <summary>Writes the spec to a file.</summary>
    public void Save(string path) => File.WriteAllText(path, ToJsonString() + "\n");

    /// <summary>A hex SHA-256 of the spec's canonical JSON: checkpoints record it to refuse a different graph.</summary>
    public string Hash() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToJson().ToJsonString())));

    /// <summary>The node with this id.</summary>
    /// <exception cref="KeyNotFoundException">No such node.</exception>
    public NodeSpec this[string id] => Nodes.FirstOrDefault(n => n.Id == id) ?? throw new KeyNotFoundException($"the spec has no node '{id}'");

    /// <summary>A spec with node <paramref name="id"/> replaced by <paramref name="replacement"/> (which may have another id: references follow).</summary>
    public GraphSpec Replace(string id, NodeSpec replacement)
    {
        ArgumentNullException.ThrowIfNull(replacement);
        _ = this[id];
        IEnumerable<NodeSpec> nodes = Nodes.Select(n => n.Id == id ? replacement : Rename(n, id, replacement.Id));
        return new GraphSpec([.. nodes], Output == id ? replacement.Id : Output, Version);
    }

    /// <summary>A spec without node <paramref name="id"/>: its consumers read from its single input instead.</summary>
    /// <exception cref="InvalidOperationException">The node does not have exactly one input.</exception>
    public GraphSpec Remove(string id)
    {
        NodeSpec removed = this[id];
        if (removed.Inputs.Count != 1)
        {
            throw new InvalidOperationException($"node '{id}' has {removed.Inputs.Count} inputs; only a node with one input can be removed");
        }
        string input = removed.Inputs[0];
        IEnumerable<NodeSpec> nodes = Nodes.Where(n => n.Id != id).Select(n => Rename(n, id, input));
        return new GraphSpec([.. nodes], Output == id ? input : Output, Version);
    }

    /// <summary>A spec with one more node.</summary>
    public GraphSpec Add(NodeSpec node, bool makeOutput = false) => new([.. Nodes, node], makeOutput ? node.Id : Output, Version);

    private static NodeSpec Rename(NodeSpec node, string from, string to) =>
        node.Inputs.Any(i => i == from || i.StartsWith(from + ":", StringComparison.Ordinal))
            ? node with { Inputs = [.. node.Inputs.Select(i => i == from ? to : i.StartsWith(from + ":", StringComparison.Ordinal) ? to + i[from.Length..] : i)] }
            : node;

    /// <summary>A table of the nodes: id, type, inputs, parameters; the output marked.</summary>
    public string Describe()
    {
        var text = new StringBuilder();
        int idWidth = Math.Max(4, Nodes.Max(n => n.Id.Length));
        int typeWidth = Math.Max(4, Nodes.Max(n => n.Type.Length));
        text.AppendLine(System.Globalization.CultureInfo.InvariantCulture, $"{"id".PadRight(idWidth)}  {"type".PadRight(typeWidth)}  inputs -> params");
        foreach (NodeSpec n in Nodes)
        {
            string mark = n.Id == Output ? "  (output)" : "";
            text.AppendLine(System.Globalization.CultureInfo.InvariantCulture,
                $"{n.Id.PadRight(idWidth)}  {n.Type.PadRight(typeWidth)}  [{string.Join(", ", n.Inputs)}] -> {n.Parameters.ToJsonString()}{mark}");
        }
        return text.ToString();
    }
}

/// <summary>A graph spec that cannot be loaded: <see cref="Errors"/> lists every problem found.</summary>
public sealed class GraphSpecException : Exception
{
    /// <summary>Creates the exception for a spec and its problems.</summary>
    public GraphSpecException(string source, IReadOnlyList<string> errors)
        : base($"{source}: {errors.Count} problem(s):\n  " + string.Join("\n  ", errors))
    {
        Source = source;
        Errors = errors;
    }

    /// <summary>Creates the exception.</summary>
    public GraphSpecException()
        : this("spec", [])
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public GraphSpecException(string message)
        : this("spec", [message])
    {
    }

    /// <summary>Creates the exception with a message and the failure underneath.</summary>
    public GraphSpecException(string message, Exception innerException)
        : base(message, innerException)
    {
        Errors = [message];
    }

    /// <summary>Every problem, one per entry, each naming the node and parameter.</summary>
    public IReadOnlyList<string> Errors { get; } = [];
}
