using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Distributed.Benchmarks;

/// <summary>Each collective on each dtype and size, checked on every rank against a reference built from every rank's (reproducible) data.</summary>
internal static class Collectives
{
    private static readonly ScalarType[] Dtypes = [ScalarType.Float32, ScalarType.Float64, ScalarType.Float16, ScalarType.BFloat16, ScalarType.Int32, ScalarType.Int64];
    private static readonly long[] Sizes = [1, 7, 1_000_003];

    public static int Run(IProcessGroup group, Device device)
    {
        int failures = 0;
        int n = group.WorldSize;
        foreach (ScalarType dtype in Dtypes)
        {
            foreach (long size in Sizes)
            {
                using var scope = NewDisposeScope();
                bool floating = dtype is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;
                Tensor[] data = [.. Enumerable.Range(0, n).Select(r => Data(r, size, dtype))];
                Tensor sum = data.Aggregate((a, b) => a.to_type(ScalarType.Float64) + b.to_type(ScalarType.Float64));
                Tensor stacked = torch.stack(data.Select(d => d.to_type(ScalarType.Float64)).ToArray());
                foreach ((string name, ReduceOp op, Tensor expected) in new[]
                {
                    ("all_reduce sum", ReduceOp.Sum, sum),
                    ("all_reduce max", ReduceOp.Max, stacked.max(0).values),
                    ("all_reduce min", ReduceOp.Min, stacked.min(0).values),
                })
                {
                    Tensor t = data[group.Rank].to(device);
                    group.AllReduce(t, op);
                    failures += Check(group, $"{name} {dtype} {size}", t, expected);
                }
                if (floating)
                {
                    Tensor t = data[group.Rank].to(device);
                    group.AllReduce(t, ReduceOp.Average);
                    failures += Check(group, $"all_reduce avg {dtype} {size}", t, sum / n, tolerance: dtype is ScalarType.Float16 or ScalarType.BFloat16 ? 1e-2 : 1e-6);
                }
                Tensor b = data[group.Rank].to(device);
                group.Broadcast(b, n - 1);
                failures += Check(group, $"broadcast {dtype} {size}", b, data[n - 1]);

                Tensor gathered = empty(size * n, dtype: dtype, device: device);
                group.AllGather(data[group.Rank].to(device), gathered);
                failures += Check(group, $"all_gather {dtype} {size}", gathered, cat(data, 0));

                long padded = (size + n - 1) / n * n;
                Tensor[] wide = [.. Enumerable.Range(0, n).Select(r => Data(r, padded, dtype))];
                Tensor wideSum = wide.Aggregate((x, y) => x.to_type(ScalarType.Float64) + y.to_type(ScalarType.Float64));
                Tensor scattered = empty(padded / n, dtype: dtype, device: device);
                group.ReduceScatter(wide[group.Rank].to(device), scattered);
                failures += Check(group, $"reduce_scatter {dtype} {size}", scattered, wideSum.narrow(0, group.Rank * (padded / n), padded / n));

                // The asynchronous forms, all four in flight at once (on nccl: on the side stream), waited for in
                // reverse order; the checks read the results on the default stream after the waits.
                Tensor asyncSum = data[group.Rank].to(device), asyncBroadcast = data[group.Rank].to(device);
                Tensor asyncGathered = empty(size * n, dtype: dtype, device: device), asyncScattered = empty(padded / n, dtype: dtype, device: device);
                ICollectiveWork[] works =
                [
                    group.AllReduceAsync(asyncSum),
                    group.BroadcastAsync(asyncBroadcast, n - 1),
                    group.AllGatherAsync(data[group.Rank].to(device), asyncGathered),
                    group.ReduceScatterAsync(wide[group.Rank].to(device), asyncScattered),
                ];
                foreach (ICollectiveWork work in works.Reverse())
                {
                    work.Wait();
                }
                failures += Check(group, $"all_reduce async {dtype} {size}", asyncSum, sum);
                failures += Check(group, $"broadcast async {dtype} {size}", asyncBroadcast, data[n - 1]);
                failures += Check(group, $"all_gather async {dtype} {size}", asyncGathered, cat(data, 0));
                failures += Check(group, $"reduce_scatter async {dtype} {size}", asyncScattered, wideSum.narrow(0, group.Rank * (padded / n), padded / n));

                // all_to_all: block i of this rank's output is block `rank` of rank i's input; blocking, then async.
                long block = padded / n;
                Tensor exchanged = cat([.. wide.Select(w => w.narrow(0, group.Rank * block, block))], 0);
                Tensor toAll = empty(padded, dtype: dtype, device: device), toAllAsync = empty(padded, dtype: dtype, device: device);
                Tensor mineWide = wide[group.Rank].to(device);
                group.AllToAll(mineWide, toAll);
                group.AllToAllAsync(mineWide, toAllAsync).Wait();
                failures += Check(group, $"all_to_all {dtype} {size}", toAll, exchanged);
                failures += Check(group, $"all_to_all async {dtype} {size}", toAllAsync, exchanged);

                // A ring: even ranks send first, odd ranks receive first (NCCL point-to-point blocks until matched).
                Tensor received = empty(size, dtype: dtype, device: device);
                int next = (group.Rank + 1) % n, previous = (group.Rank + n - 1) % n;
                if (group.Rank % 2 == 0)
                {
                    group.Send(data[group.Rank].to(device), next);
                    group.Recv(received, previous);
                }
                else
                {
                    group.Recv(received, previous);
                    group.Send(data[group.Rank].to(device), next);
                }
                failures += Check(group, $"send/recv {dtype} {size}", received, data[previous]);
            }
        }
        failures += SubGroups(group, device);
        group.Barrier();
        Console.WriteLine($"OK rank {group.Rank}/{group.WorldSize} barrier");
        try
        {
            group.AllReduce(ones(4));
            Console.WriteLine($"FAIL rank {group.Rank}: a CPU tensor was accepted by the nccl backend");
            failures++;
        }
        catch (ArgumentException e)
        {
            Console.WriteLine($"OK rank {group.Rank}/{group.WorldSize} wrong device refused: {e.Message}");
        }
        return failures;
    }

    /// <summary>
    /// ncclCommSplit: the last rank alone (the others get no group), then every rank named in reverse order (group
    /// ranks follow the parent's), with a blocking and an asynchronous all-reduce in each.
    /// </summary>
    private static int SubGroups(IProcessGroup group, Device device)
    {
        int failures = 0, n = group.WorldSize;
        using var scope = NewDisposeScope();
        Tensor mine = Data(group.Rank, 1000, ScalarType.Float32);
        using (IProcessGroup? alone = group.NewGroup([n - 1]))
        {
            if ((alone is not null) != (group.Rank == n - 1))
            {
                Console.WriteLine($"FAIL rank {group.Rank}/{n} new_group([{n - 1}]) membership");
                failures++;
            }
            else if (alone is not null)
            {
                Tensor t = mine.to(device);
                alone.AllReduce(t);
                failures += Check(group, $"new_group([{n - 1}]) all_reduce (rank {alone.Rank} of {alone.WorldSize})", t, mine);
            }
        }
        using IProcessGroup all = group.NewGroup([.. Enumerable.Range(0, n).Reverse()])!;
        Tensor sum = Enumerable.Range(0, n).Select(r => Data(r, 1000, ScalarType.Float32)).Aggregate((a, b) => a + b);
        Tensor blocking = mine.to(device), queued = mine.to(device);
        all.AllReduce(blocking);
        all.AllReduceAsync(queued).Wait();
        failures += Check(group, $"new_group(all) all_reduce (rank {all.Rank} of {all.WorldSize})", blocking, sum);
        failures += Check(group, "new_group(all) all_reduce async", queued, sum);
        return failures;
    }

    /// <summary>Whole numbers below 64 in magnitude: sums over a few ranks are exact in every dtype here.</summary>
    private static Tensor Data(int rank, long size, ScalarType dtype)
    {
        var generator = new Generator((ulong)(1000 + rank));
        return randint(-63, 64, [size], dtype: ScalarType.Int64, generator: generator).to_type(dtype);
    }

    private static int Check(IProcessGroup group, string what, Tensor actual, Tensor expected, double tolerance = 0)
    {
        double diff = (actual.cpu().to_type(ScalarType.Float64) - expected.cpu().to_type(ScalarType.Float64)).abs().max().item<double>();
        bool ok = diff <= tolerance * Math.Max(1, expected.abs().max().to_type(ScalarType.Float64).item<double>());
        Console.WriteLine($"{(ok ? "OK" : "FAIL")} rank {group.Rank}/{group.WorldSize} {what} maxdiff={diff:G3}");
        return ok ? 0 : 1;
    }
}
