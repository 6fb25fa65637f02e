using System.Text.Json.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

public sealed class CombinatorTests
{
    private static JsonObject Range(string id, long start, long count) => Node(id, "range", parameters: new() { ["start"] = start, ["count"] = count });

    [Fact]
    public void MapFilterTakeCycle_ComposeAsWritten() =>
        ReadAll<long>(Build("take",
            Range("src", 0, 5),
            Node("even", "filter", ["src"], new() { ["fn"] = "even" }),
            Node("x10", "map", ["even"], new() { ["fn"] = "times10" }),
            Node("cycle", "cycle", ["x10"], new() { ["times"] = 3 }),
            Node("take", "take", ["cycle"], new() { ["count"] = 7 })))
        .ShouldBe([0L, 20, 40, 0, 20, 40, 0]);

    [Fact]
    public void ConcatZipInterleave_CombineInputs()
    {
        ReadAll<long>(Build("c", Range("a", 0, 2), Range("b", 10, 2), Node("c", "concat", ["a", "b"]))).ShouldBe([0L, 1, 10, 11]);
        ReadAll<(long, long)>(Build("z", Range("a", 0, 3), Range("b", 10, 2), Node("z", "zip", ["a", "b"]))).ShouldBe([(0L, 10L), (1L, 11L)]);
        ReadAll<long>(Build("i", Range("a", 0, 3), Range("b", 10, 1), Node("i", "interleave", ["a", "b"]))).ShouldBe([0L, 10, 1, 2]);
        ReadAll<long>(Build("i", Range("a", 0, 3), Range("b", 10, 1), Node("i", "interleave", ["a", "b"], new() { ["stop"] = "first" }))).ShouldBe([0L, 10, 1]);
    }

    [Fact]
    public void BatchUnbatchFlatMap_KeepEveryItem()
    {
        ReadAll<long[]>(Build("b", Range("a", 0, 5), Node("b", "batch", ["a"], new() { ["size"] = 2 }))).Select(b => b.Length).ShouldBe([2, 2, 1]);
        ReadAll<long[]>(Build("b", Range("a", 0, 5), Node("b", "batch", ["a"], new() { ["size"] = 2, ["drop_last"] = true }))).Count.ShouldBe(2);
        ReadAll<long>(Build("u", Range("a", 0, 5), Node("b", "batch", ["a"], new() { ["size"] = 2 }), Node("u", "unbatch", ["b"]))).ShouldBe([0L, 1, 2, 3, 4]);
        ReadAll<long>(Build("f", Range("a", 0, 2), Node("f", "flat_map", ["a"], new() { ["fn"] = "twice" }))).ShouldBe([0L, 0, 1, 1]);
    }

    [Fact]
    public void WeightedSample_FollowsTheWeights_AndEachStopRule()
    {
        List<long> mixed = ReadAll<long>(Build("take",
            Range("a", 0, 1_000_000), Range("b", 1_000_000, 1_000_000),
            Node("w", "weighted_sample", ["a", "b"], new() { ["weights"] = new JsonArray(0.8, 0.2) }),
            Node("take", "take", ["w"], new() { ["count"] = 10_000 })));
        (mixed.Count(x => x < 1_000_000) / 10_000.0).ShouldBe(0.8, 0.02);

        List<long> first = ReadAll<long>(Build("w", Range("a", 0, 5), Range("b", 100, 1000),
            Node("w", "weighted_sample", ["a", "b"], new() { ["weights"] = new JsonArray(1, 1), ["stop"] = "first_exhausted" })));
        first.Count(x => x < 100).ShouldBe(5);
        first.Count.ShouldBeLessThan(1005);

        List<long> all = ReadAll<long>(Build("w", Range("a", 0, 5), Range("b", 100, 50),
            Node("w", "weighted_sample", ["a", "b"], new() { ["weights"] = new JsonArray(1, 1), ["stop"] = "all_exhausted" })));
        all.Order().ShouldBe(Enumerable.Range(0, 5).Select(i => (long)i).Concat(Enumerable.Range(100, 50).Select(i => (long)i)));

        List<long> cycled = ReadAll<long>(Build("w", Range("a", 0, 5), Range("b", 100, 50),
            Node("w", "weighted_sample", ["a", "b"], new() { ["weights"] = new JsonArray(1, 1) })));
        cycled.Count(x => x >= 100).ShouldBe(50);
        cycled.Count(x => x < 100).ShouldBeGreaterThan(5); // a restarted until b ran out
    }

    [Fact]
    public void BucketBatch_GroupsByLength_AndInBatchShuffleKeepsMembers()
    {
        List<long[]> batches = ReadAll<long[]>(Build("b",
            Node("src", "items", parameters: new() { ["values"] = new JsonArray(1, 100, 2, 200, 3, 1000, 4) }),
            Node("b", "bucket_batch", ["src"], new() { ["size"] = 2, ["length"] = "digits", ["bounds"] = new JsonArray(1, 3) })));

        batches.Select(b => string.Join(",", b)).ShouldBe(["1,2", "100,200", "3,4", "1000"]);

        List<long[]> shuffled = ReadAll<long[]>(Build("s", Range("a", 0, 64), Node("b", "batch", ["a"], new() { ["size"] = 32 }), Node("s", "in_batch_shuffle", ["b"])));
        shuffled[0].Order().ShouldBe(Enumerable.Range(0, 32).Select(i => (long)i));
        shuffled[0].ShouldNotBe(Enumerable.Range(0, 32).Select(i => (long)i));
    }

    [Fact]
    public void ParallelMap_Unordered_YieldsEveryItemOnce_OrderedKeepsOrder()
    {
        List<long> unordered = ReadAll<long>(Build("m", Range("a", 0, 500), Node("m", "map", ["a"], new() { ["fn"] = "slow_times10", ["threads"] = 4, ["ordered"] = false })));
        List<long> ordered = ReadAll<long>(Build("m", Range("a", 0, 500), Node("m", "map", ["a"], new() { ["fn"] = "slow_times10", ["threads"] = 4 })));

        unordered.Order().ShouldBe(Enumerable.Range(0, 500).Select(i => i * 10L));
        ordered.ShouldBe(Enumerable.Range(0, 500).Select(i => i * 10L));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void MapError_FailsNamingTheNode_OrIsSkippedAndCounted(int threads)
    {
        DataGraph failing = Build("m", Range("a", 10, 10), Node("m", "map", ["a"], new() { ["fn"] = "fail_on_13", ["threads"] = threads }));
        Should.Throw<DataPipelineException>(() => ReadAll<long>(failing)).Message.ShouldBe("node 'm' (map): an item: thirteen");

        DataGraph skipping = Build("m", Range("a", 10, 10), Node("m", "map", ["a"], new() { ["fn"] = "fail_on_13", ["threads"] = threads, ["on_error"] = "skip" }));
        using var loader = new DataLoader<long>(skipping);
        loader.ReadToEnd().ShouldBe(Enumerable.Range(10, 10).Where(i => i != 13).Select(i => (long)i));
        loader.Roots[0].Stats.Skipped.ShouldBe(1);
    }
}

public sealed class ForkTests
{
    private static DataGraph ForkZip() => Build("prefetch",
        Node("src", "range", parameters: new() { ["count"] = 50 }),
        Node("shuffle", "shuffle", ["src"], new() { ["buffer"] = 10 }),
        Node("fork", "fork", ["shuffle"], new() { ["outputs"] = 2 }),
        Node("x10", "map", ["fork:1"], new() { ["fn"] = "times10" }),
        Node("zip", "zip", ["fork:0", "x10"]),
        Node("prefetch", "prefetch", ["zip"], new() { ["size"] = 3 }));

    [Fact]
    public void Fork_OutputsReadOnDifferentThreads_AreRejectedAtLoad() =>
        Should.Throw<GraphSpecException>(() => Build("zip",
            Node("src", "range", parameters: new() { ["count"] = 50 }),
            Node("fork", "fork", ["src"], new() { ["outputs"] = 2 }),
            Node("x10", "map", ["fork:1"], new() { ["fn"] = "times10", ["threads"] = 2 }),
            Node("zip", "zip", ["fork:0", "x10"])))
        .Errors.Single().ShouldBe("node 'x10' reads 'fork:1' on threads of its own while 'fork:0' is read elsewhere; the outputs of 'fork' share one reader: put the threads after the outputs rejoin");

    [Fact]
    public void Fork_EveryOutputSeesEveryItem()
    {
        List<(long, long)> pairs = ReadAll<(long, long)>(ForkZip());

        pairs.Count.ShouldBe(50);
        pairs.ShouldAllBe(p => p.Item2 == p.Item1 * 10);
    }

    [Fact]
    public void Demux_SendsEachItemToItsKeysOutput()
    {
        DataGraph graph = Build("c",
            Node("src", "items", parameters: new() { ["values"] = new JsonArray(1, 22, 3, 44, 55, 6) }),
            Node("d", "demux", ["src"], new() { ["outputs"] = 3, ["key"] = "digits" }),
            Node("c", "concat", ["d:2", "d:1"]));

        ReadAll<long>(graph).ShouldBe([22L, 44, 55, 1, 3, 6]);
    }

    [Fact]
    public void Fork_OutputReadTooSlowly_StopsNamingTheNode()
    {
        DataGraph graph = Build("c",
            Node("src", "range", parameters: new() { ["count"] = 100 }),
            Node("f", "fork", ["src"], new() { ["outputs"] = 2, ["buffer"] = 10 }),
            Node("c", "concat", ["f:0", "f:1"]));

        Should.Throw<DataPipelineException>(() => ReadAll<long>(graph)).Message.ShouldStartWith("node 'f': more than 10 items wait");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(13)]
    [InlineData(31)]
    public void Fork_ResumesExactly(int stopAfter)
    {
        DataGraph graph = ForkZip();
        List<(long, long)> all = ReadAll<(long, long)>(graph);
        using var first = new DataLoader<(long, long)>(graph);
        for (int i = 0; i < stopAfter; i++)
        {
            first.TryNext(out _);
        }
        JsonObject state = JsonNode.Parse(first.SaveState().ToJsonString())!.AsObject();
        using var second = new DataLoader<(long, long)>(graph);
        second.LoadState(state);

        second.ReadToEnd().ShouldBe(all.Skip(stopAfter));
    }
}
