using System.Text.Json.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

public sealed class GraphSpecTests
{
    private static GraphSpec Pipeline() => Spec("batch",
        Node("src", "range", parameters: new() { ["count"] = 20 }),
        Node("shuffle", "shuffle", ["src"], new() { ["buffer"] = 8 }),
        Node("x10", "map", ["shuffle"], new() { ["fn"] = "times10", ["threads"] = 2 }),
        Node("batch", "batch", ["x10"], new() { ["size"] = 4, ["drop_last"] = true }));

    [Fact]
    public void Parse_ThenToJson_IsLossless()
    {
        GraphSpec spec = Pipeline();
        string json = spec.ToJsonString();

        GraphSpec again = GraphSpec.Parse(json);

        again.ToJsonString().ShouldBe(json);
        again.Hash().ShouldBe(spec.Hash());
        DataGraph.Build(again, Registry()).ItemType.ShouldBe(typeof(long[]));
        JsonNode.Parse(json)!["nodes"]![2]!["params"]!["threads"]!.GetValue<int>().ShouldBe(2);
    }

    [Fact]
    public void Remove_RewiresConsumersToTheRemovedNodesInput()
    {
        GraphSpec spec = Pipeline().Remove("shuffle");

        spec.Nodes.Select(n => n.Id).ShouldBe(["src", "x10", "batch"]);
        spec["x10"].Inputs.ShouldBe(["src"]);
        ReadAll<long[]>(DataGraph.Build(spec, Registry()))[0].ShouldBe([0L, 10, 20, 30]);
    }

    [Fact]
    public void Replace_SwapsANodeAndFollowsItsNewId()
    {
        GraphSpec spec = Pipeline().Replace("src", new NodeSpec("items", "items", [], new JsonObject { ["values"] = new JsonArray(5, 6, 7) }));

        spec["shuffle"].Inputs.ShouldBe(["items"]);
        ReadAll<long[]>(DataGraph.Build(spec, Registry())).ShouldBeEmpty(); // 3 items, batches of 4, drop_last
        ReadAll<long[]>(DataGraph.Build(spec.Replace("batch", new NodeSpec("batch", "batch", ["x10"], new JsonObject { ["size"] = 4 })), Registry()))
            .Single().Order().ShouldBe([50L, 60, 70]);
    }

    [Fact]
    public void Build_InvalidSpec_ListsEveryProblemAtOnce()
    {
        GraphSpec spec = Spec("out",
            Node("src", "range", parameters: new() { ["count"] = -1, ["colour"] = "red" }),
            Node("a", "nosuch", ["src"]),
            Node("b", "map", ["ghost"], new() { ["fn"] = "times10" }),
            Node("c", "batch", ["d"], new() { ["size"] = 2 }),
            Node("d", "batch", ["c"], new() { ["size"] = 2 }),
            Node("out", "map", ["src"], new() { ["fn"] = "nope", ["threads"] = "many" }));

        GraphSpecException ex = Should.Throw<GraphSpecException>(() => DataGraph.Build(spec, Registry(), "bad.json"));

        ex.Message.ShouldStartWith("bad.json: ");
        ex.Errors.ShouldContain(e => e.Contains("node 'a': unknown type \"nosuch\"", StringComparison.Ordinal));
        ex.Errors.ShouldContain(e => e.Contains("node 'b': input 'ghost' is not a node", StringComparison.Ordinal));
        ex.Errors.ShouldContain(e => e.StartsWith("cycle: ", StringComparison.Ordinal) && e.Contains("c -> d", StringComparison.Ordinal));
        Should.Throw<GraphSpecException>(() => DataGraph.Build(Spec("out",
                Node("src", "range", parameters: new() { ["count"] = -1, ["colour"] = "red" }),
                Node("out", "map", ["src"], new() { ["fn"] = "nope", ["threads"] = "many" })), Registry()))
            .Errors.ShouldBe([
                "node 'src': parameter \"count\" is -1; it must be at least 0",
                "node 'src': unknown parameter \"colour\" (this node type takes \"count\", \"on_error\", \"start\")",
            ], ignoreOrder: true);
        // Nodes downstream of a broken node are checked once it builds.
        Should.Throw<GraphSpecException>(() => DataGraph.Build(Spec("out",
                Node("src", "range", parameters: new() { ["count"] = 1 }),
                Node("out", "map", ["src"], new() { ["fn"] = "nope", ["threads"] = "many" })), Registry()))
            .Errors.ShouldSatisfyAllConditions(
                e => e.Count.ShouldBe(2),
                e => e[0].ShouldBe("node 'out': parameter \"threads\" is \"many\"; it must be an integer"),
                e => e[1].ShouldStartWith("node 'out': parameter \"fn\": no function named \"nope\" is registered (registered: blob.utf8, digits, even, fail_on_13, "));
    }

    [Fact]
    public void Build_FunctionOfTheWrongType_NamesBothTypes()
    {
        NodeRegistry registry = Registry().AddMap<string, int>("length", s => s.Length);

        GraphSpecException ex = Should.Throw<GraphSpecException>(() => DataGraph.Build(Spec("m",
            Node("src", "range", parameters: new() { ["count"] = 3 }),
            Node("m", "map", ["src"], new() { ["fn"] = "length" })), registry));

        ex.Errors.Single().ShouldBe("node 'm': parameter \"fn\": function \"length\" takes String, but the input yields Int64");
    }

    [Theory]
    [InlineData("{", "not valid JSON")]
    [InlineData("[]", "must be a JSON object")]
    [InlineData("{\"version\": 2, \"output\": \"a\", \"nodes\": []}", "\"version\" must be 1")]
    [InlineData("{\"version\": 1, \"nodes\": [{\"type\": \"range\", \"extra\": 1}]}", "nodes[0]: \"id\" is missing")]
    public void Parse_Malformed_SaysWhatIsWrong(string json, string message) =>
        Should.Throw<GraphSpecException>(() => GraphSpec.Parse(json, "x.json")).Message.ShouldContain(message);

    [Fact]
    public void Describe_ListsEveryNodeAndMarksTheOutput()
    {
        string text = Pipeline().Describe();

        text.ShouldContain("shuffle  shuffle");
        text.ShouldContain("[shuffle] -> {\"fn\":\"times10\",\"threads\":2}");
        text.Split('\n').Single(l => l.Contains("(output)", StringComparison.Ordinal)).ShouldStartWith("batch");
    }
}
