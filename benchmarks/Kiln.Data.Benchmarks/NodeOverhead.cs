using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Kiln.Data.Benchmarks;

/// <summary>
/// Per-node overhead: chains of 0, 1, 4 and 16 pass-through map nodes over a range source, sequential.
/// The cost of one node per item is (time of a chain of k − time of the bare source) / (items × k); the
/// bare loop over the same numbers is printed beside it as the floor.
/// </summary>
internal static class NodeOverhead
{
    public static void Run(long items, int repeats)
    {
        NodeRegistry registry = NodeRegistry.CreateDefault().AddMap<long, long>("identity", static x => x);
        long floorSum = 0;
        double floor = Best(repeats, () =>
        {
            long sum = 0;
            for (long i = 0; i < items; i++)
            {
                sum += i;
            }
            floorSum = sum;
        });
        Console.WriteLine($"overhead: bare loop {floor / items * 1e9:F2} ns/item (sum {floorSum})");
        double source = Chain(registry, items, 0, repeats);
        Console.WriteLine($"overhead: range source alone {source / items * 1e9:F1} ns/item");
        foreach (int depth in new[] { 1, 4, 16 })
        {
            double chain = Chain(registry, items, depth, repeats);
            double perNode = (chain - source) / items / depth * 1e9;
            Console.WriteLine($"overhead: {depth,2} map nodes: {chain / items * 1e9:F1} ns/item in all, {perNode:F1} ns/item/node (target < 200)");
        }
    }

    private static double Chain(NodeRegistry registry, long items, int depth, int repeats)
    {
        var nodes = new List<NodeSpec> { new("n0", "range", [], new JsonObject { ["count"] = items }) };
        for (int i = 1; i <= depth; i++)
        {
            nodes.Add(new NodeSpec($"n{i}", "map", [$"n{i - 1}"], new JsonObject { ["fn"] = "identity" }));
        }
        DataGraph graph = DataGraph.Build(new GraphSpec(nodes, $"n{depth}"), registry);
        return Best(repeats, () =>
        {
            using var loader = new DataLoader<long>(graph);
            loader.StartEpoch(0);
            long count = 0;
            while (loader.TryNext(out _))
            {
                count++;
            }
            if (count != items)
            {
                throw new InvalidOperationException($"chain of {depth} yielded {count} items, not {items}");
            }
        });
    }

    private static double Best(int repeats, Action run)
    {
        double best = double.MaxValue;
        for (int r = 0; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            run();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
