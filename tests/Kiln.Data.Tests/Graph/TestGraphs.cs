using System.Text.Json.Nodes;

namespace Kiln.Data.Tests.Graph;

/// <summary>Small graphs over integers, and the functions their specs name.</summary>
internal static class TestGraphs
{
    public static NodeRegistry Registry()
    {
        NodeRegistry registry = NodeRegistry.CreateDefault();
        registry.AddMap<long, long>("times10", x => x * 10);
        registry.AddMap<long, long>("slow_times10", x =>
        {
            Thread.SpinWait(2000 + (int)(x % 7 * 500));
            return x * 10;
        });
        registry.AddMap<long, long>("fail_on_13", x => x == 13 ? throw new InvalidOperationException("thirteen") : x);
        registry.AddFilter<long>("even", x => x % 2 == 0);
        registry.AddFlatMap<long, long>("twice", x => [x, x]);
        registry.AddKey<long>("digits", x => x.ToString(System.Globalization.CultureInfo.InvariantCulture).Length);
        return registry;
    }

    public static JsonObject Node(string id, string type, string[]? inputs = null, JsonObject? parameters = null)
    {
        var node = new JsonObject { ["id"] = id, ["type"] = type };
        if (inputs is not null)
        {
            node["inputs"] = new JsonArray([.. inputs.Select(i => (JsonNode)i)]);
        }
        if (parameters is not null)
        {
            node["params"] = parameters;
        }
        return node;
    }

    public static GraphSpec Spec(string output, params JsonObject[] nodes) =>
        GraphSpec.Parse(new JsonObject { ["version"] = 1, ["output"] = output, ["nodes"] = new JsonArray(nodes) }.ToJsonString());

    public static DataGraph Build(string output, params JsonObject[] nodes) => DataGraph.Build(Spec(output, nodes), Registry());

    public static List<T> ReadAll<T>(DataGraph graph, DataLoaderOptions? options = null, int epoch = 0)
    {
        using var loader = new DataLoader<T>(graph, options);
        loader.StartEpoch(epoch);
        return [.. loader.ReadToEnd()];
    }
}
