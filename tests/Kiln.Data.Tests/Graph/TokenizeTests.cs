using System.Text.Json.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

public sealed class TokenizeTests
{
    private static DataGraph Graph(int maxLength) => Build("tokens",
        Node("text", "items", parameters: new() { ["values"] = new JsonArray("Kiln fires clay into stone.", "") }),
        Node("tokens", "tokenize", ["text"], new() { ["model"] = "gpt2", ["max_length"] = maxLength }));

    [Fact]
    public void Tokenize_Gpt2_GivesTheReferenceIds() =>
        ReadAll<int[]>(Graph(0)).ShouldBe([[42, 346, 77, 12252, 21558, 656, 7815, 13], []]);

    [Fact]
    public void Tokenize_MaxLength_Truncates() =>
        ReadAll<int[]>(Graph(3))[0].ShouldBe([42, 346, 77]);

    [Fact]
    public void Tokenize_OfNonText_IsRejectedAtLoad() =>
        Should.Throw<GraphSpecException>(() => Build("t", Node("n", "range", parameters: new() { ["count"] = 1 }), Node("t", "tokenize", ["n"])))
            .Errors.Single().ShouldBe("node 't': tokenize reads text (strings), but 'n' yields Int64");
}
