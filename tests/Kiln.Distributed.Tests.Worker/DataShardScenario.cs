using System.Text.Json.Nodes;
using Kiln.Data;
using TorchSharp;

namespace Kiln.Distributed.Tests.Worker;

/// <summary>
/// Each rank reads range(count) → shuffle → shard through a <see cref="DataLoader{T}"/> whose rank and world size come
/// from the process group, all-gathers the ids it read (padded with -1), and checks that the shards are disjoint, that
/// together they hold every item once, and that rank r holds the items at shuffled positions r, r + size, ….
/// </summary>
internal static class DataShardScenario
{
    public static string? Run(IProcessGroup group, int count)
    {
        int size = group.WorldSize;
        GraphSpec spec = GraphSpec.Parse(new JsonObject
        {
            ["version"] = 1,
            ["output"] = "shard",
            ["nodes"] = new JsonArray(
                new JsonObject { ["id"] = "ids", ["type"] = "range", ["params"] = new JsonObject { ["count"] = count } },
                new JsonObject { ["id"] = "mix", ["type"] = "shuffle", ["inputs"] = new JsonArray("ids"), ["params"] = new JsonObject { ["buffer"] = 1000 } },
                new JsonObject { ["id"] = "shard", ["type"] = "shard", ["inputs"] = new JsonArray("mix") }),
        }.ToJsonString());
        DataGraph graph = DataGraph.Build(spec, NodeRegistry.CreateDefault());
        using var loader = new DataLoader<long>(graph, new DataLoaderOptions { Seed = 17 }.WithProcessGroup(group));
        long[] mine = [.. loader.ReadToEnd()];

        int width = (count + size - 1) / size;
        if (mine.Length > width)
        {
            return $"read {mine.Length} items, more than ceil({count}/{size}) = {width}";
        }
        var padded = new long[width];
        Array.Fill(padded, -1L);
        mine.CopyTo(padded, 0);
        using torch.Tensor input = torch.tensor(padded, dtype: torch.ScalarType.Int64);
        using torch.Tensor output = torch.full(size * (long)width, -2L, dtype: torch.ScalarType.Int64);
        group.AllGather(input, output);
        long[] all = output.data<long>().ToArray();

        var seen = new int[count];
        var counts = new int[size];
        var order = new List<long>[size];
        for (int r = 0; r < size; r++)
        {
            order[r] = [];
            for (int j = 0; j < width; j++)
            {
                long id = all[(r * width) + j];
                if (id == -1)
                {
                    continue;
                }
                if (id < 0 || id >= count)
                {
                    return $"rank {r} read {id}, not in [0, {count})";
                }
                seen[id]++;
                counts[r]++;
                order[r].Add(id);
            }
        }
        int missing = Array.IndexOf(seen, 0);
        if (missing >= 0)
        {
            return $"item {missing} was read by no rank";
        }
        int twice = Array.FindIndex(seen, s => s > 1);
        if (twice >= 0)
        {
            return $"item {twice} was read by {seen[twice]} ranks";
        }
        for (int r = 0; r < size; r++)
        {
            int expected = (count - r + size - 1) / size;
            if (counts[r] != expected)
            {
                return $"rank {r} read {counts[r]} items, expected {expected} (counts {string.Join(',', counts)})";
            }
        }
        // The shuffle sits upstream of the shard, so its order is the same on every rank and in a world of one; rank r
        // keeps positions r, r + size, … of that order.
        using var whole = new DataLoader<long>(graph, new DataLoaderOptions { Seed = 17 });
        long[] full = [.. whole.ReadToEnd()];
        for (int position = 0; position < count; position++)
        {
            long got = order[position % size][position / size];
            if (got != full[position])
            {
                return $"rank {position % size} read {got} at its item {position / size}, a world of one read {full[position]} at {position}";
            }
        }
        return mine.Length == counts[group.Rank] ? null : $"this rank read {mine.Length}, the gather says {counts[group.Rank]}";
    }
}
