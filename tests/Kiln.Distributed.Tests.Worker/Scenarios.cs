using TorchSharp;

namespace Kiln.Distributed.Tests.Worker;

/// <summary>The named scenarios; each returns null when the result matches the reference, else what differs.</summary>
internal static class Scenarios
{
    /// <summary>Whether values are whole numbers: for integer dtypes, and for float16/bfloat16 (exact in 8 bits).</summary>
    public static bool Integer { get; set; }

    /// <summary>What output tensors start as, so that an element a collective missed shows.</summary>
    private static double Sentinel => Integer ? -999.0 : double.NaN;

    /// <summary>Rank <paramref name="rank"/>'s value at <paramref name="index"/>: eighths below 127 in magnitude, exact in float32 sums.</summary>
    public static double Value(int rank, long index, int salt = 0)
    {
        double value = (((rank * 7919L) + (index * 31L) + (salt * 101L)) % 1009L / 8.0) - 60.0;
        return Integer ? Math.Truncate(value) : value;
    }

    public static double[] Data(int rank, int count, int salt = 0)
    {
        var data = new double[count];
        for (int i = 0; i < count; i++)
        {
            data[i] = Value(rank, i, salt);
        }
        return data;
    }

    public static torch.Tensor Tensor(double[] data, torch.ScalarType dtype) =>
        torch.tensor(data, dtype: torch.ScalarType.Float64).to_type(dtype).contiguous();

    public static double[] Read(torch.Tensor tensor) =>
        tensor.to_type(torch.ScalarType.Float64).contiguous().data<double>().ToArray();

    public static string? Run(IProcessGroup group, string scenario, torch.ScalarType dtype, int count)
    {
        int rank = group.Rank, size = group.WorldSize;
        switch (scenario)
        {
            case "allreduce-sum":
            case "allreduce-avg":
            case "allreduce-min":
            case "allreduce-max":
            {
                ReduceOp op = scenario[10..] switch
                {
                    "sum" => ReduceOp.Sum,
                    "avg" => ReduceOp.Average,
                    "min" => ReduceOp.Min,
                    _ => ReduceOp.Max,
                };
                using torch.Tensor tensor = Tensor(Data(rank, count), dtype);
                group.AllReduce(tensor, op);
                return Compare(Read(tensor), Reduce(size, count, op, salt: 0), dtype);
            }
            case "allreduce-async":
            {
                // Three all-reduces in flight at once, a blocking broadcast between them, waited for in reverse order.
                using torch.Tensor sum = Tensor(Data(rank, count), dtype);
                using torch.Tensor max = Tensor(Data(rank, count, salt: 1), dtype);
                using torch.Tensor average = Tensor(Data(rank, count, salt: 2), dtype);
                using torch.Tensor broadcast = Tensor(Data(rank, count, salt: 3), dtype);
                ICollectiveWork sumWork = group.AllReduceAsync(sum);
                ICollectiveWork maxWork = group.AllReduceAsync(max, ReduceOp.Max);
                group.Broadcast(broadcast, 0);
                ICollectiveWork averageWork = group.AllReduceAsync(average, ReduceOp.Average);
                averageWork.Wait();
                maxWork.Wait();
                sumWork.Wait();
                sumWork.Wait(); // a second wait is a no-op
                if (!sumWork.IsCompleted || !maxWork.IsCompleted || !averageWork.IsCompleted)
                {
                    return "a waited-for work does not report completion";
                }
                return Compare(Read(sum), Reduce(size, count, ReduceOp.Sum, salt: 0), dtype)
                    ?? Compare(Read(max), Reduce(size, count, ReduceOp.Max, salt: 1), dtype)
                    ?? Compare(Read(average), Reduce(size, count, ReduceOp.Average, salt: 2), dtype)
                    ?? Compare(Read(broadcast), Data(0, count, salt: 3), dtype);
            }
            case "collectives-async":
            {
                // A broadcast, an all-gather, an averaging reduce-scatter and an all-reduce in flight at once, waited for
                // in reverse order; the inputs stay untouched.
                int total = count * size;
                using torch.Tensor broadcast = Tensor(Data(rank, count, salt: 3), dtype);
                using torch.Tensor gatherInput = Tensor(Data(rank, count, salt: 5), dtype);
                using torch.Tensor gathered = torch.full(total, Sentinel, dtype: dtype);
                using torch.Tensor scatterInput = Tensor(Data(rank, total, salt: 7), dtype);
                using torch.Tensor scattered = torch.full(count, Sentinel, dtype: dtype);
                using torch.Tensor sum = Tensor(Data(rank, count), dtype);
                bool floating = dtype is torch.ScalarType.Float32 or torch.ScalarType.Float64 or torch.ScalarType.Float16 or torch.ScalarType.BFloat16;
                ReduceOp scatterOp = floating && !Integer ? ReduceOp.Average : ReduceOp.Sum;
                ICollectiveWork[] works =
                [
                    group.BroadcastAsync(broadcast, size - 1),
                    group.AllGatherAsync(gatherInput, gathered),
                    group.ReduceScatterAsync(scatterInput, scattered, scatterOp),
                    group.AllReduceAsync(sum),
                ];
                foreach (ICollectiveWork work in works.Reverse())
                {
                    work.Wait();
                }
                if (works.Any(w => !w.IsCompleted))
                {
                    return "a waited-for work does not report completion";
                }
                double[] reduced = Reduce(size, total, scatterOp, salt: 7);
                return Compare(Read(broadcast), Data(size - 1, count, salt: 3), dtype)
                    ?? Compare(Read(gathered), [.. Enumerable.Range(0, size).SelectMany(r => Data(r, count, salt: 5))], dtype)
                    ?? Compare(Read(scattered), reduced[(rank * count)..((rank + 1) * count)], dtype)
                    ?? Compare(Read(sum), Reduce(size, count, ReduceOp.Sum, salt: 0), dtype)
                    ?? Compare(Read(gatherInput), Data(rank, count, salt: 5), dtype)
                    ?? Compare(Read(scatterInput), Data(rank, total, salt: 7), dtype);
            }
            case "subgroups":
            {
                // The first and the last rank (named in reverse order), then the world again; bad rank lists are refused
                // on every rank before any MPI call.
                foreach (int[] bad in (int[][])[[], [0, 0], [size]])
                {
                    try
                    {
                        group.NewGroup(bad)?.Dispose();
                        return $"NewGroup([{string.Join(", ", bad)}]) was accepted";
                    }
                    catch (ArgumentException)
                    {
                    }
                }
                int[] chosen = size > 1 ? [size - 1, 0] : [0];
                bool member = rank == 0 || rank == size - 1;
                using (IProcessGroup? sub = group.NewGroup(chosen))
                {
                    if ((sub is not null) != member)
                    {
                        return member ? "a member got no group" : "a rank outside the group got one";
                    }
                    if (sub is not null)
                    {
                        int expectedRank = rank == 0 ? 0 : 1;
                        if (sub.Rank != expectedRank || sub.WorldSize != chosen.Length)
                        {
                            return $"group rank {sub.Rank} of {sub.WorldSize}, expected {expectedRank} of {chosen.Length}";
                        }
                        using torch.Tensor tensor = Tensor(Data(rank, count, salt: 11), dtype);
                        sub.AllReduce(tensor);
                        double[] first = Data(0, count, salt: 11), last = Data(size - 1, count, salt: 11);
                        double[] expected = size > 1 ? [.. first.Zip(last, (a, b) => a + b)] : first;
                        using torch.Tensor broadcast = Tensor(Data(rank, count, salt: 13), dtype);
                        sub.Broadcast(broadcast, chosen.Length - 1);
                        string? error = Compare(Read(tensor), expected, dtype) ?? Compare(Read(broadcast), Data(size - 1, count, salt: 13), dtype);
                        if (error is not null)
                        {
                            return error;
                        }
                    }
                }
                using torch.Tensor world = Tensor(Data(rank, count), dtype);
                group.AllReduce(world);
                return Compare(Read(world), Reduce(size, count, ReduceOp.Sum, salt: 0), dtype);
            }
            case "alltoall":
            {
                // Block j of every rank's input goes to rank j: block i of this rank's output is block `rank` of rank i's
                // input. Blocking, then asynchronous; in place is refused.
                int total = count * size;
                double[] expected = [.. Enumerable.Range(0, size).SelectMany(r => Data(r, total, salt: 15)[(rank * count)..((rank + 1) * count)])];
                using torch.Tensor input = Tensor(Data(rank, total, salt: 15), dtype);
                using torch.Tensor output = torch.full(total, Sentinel, dtype: dtype);
                using torch.Tensor queued = torch.full(total, Sentinel, dtype: dtype);
                group.AllToAll(input, output);
                ICollectiveWork work = group.AllToAllAsync(input, queued);
                work.Wait();
                try
                {
                    group.AllToAll(input, input);
                    return "an in-place all_to_all was accepted";
                }
                catch (ArgumentException)
                {
                }
                return Compare(Read(output), expected, dtype) ?? Compare(Read(queued), expected, dtype)
                    ?? Compare(Read(input), Data(rank, total, salt: 15), dtype);
            }
            case "broadcast":
            {
                int root = size - 1;
                using torch.Tensor tensor = Tensor(Data(rank, count, salt: 3), dtype);
                group.Broadcast(tensor, root);
                return Compare(Read(tensor), Data(root, count, salt: 3), dtype);
            }
            case "allgather":
            {
                using torch.Tensor input = Tensor(Data(rank, count, salt: 5), dtype);
                using torch.Tensor output = torch.full(size * (long)count, Sentinel, dtype: dtype);
                group.AllGather(input, output);
                double[] expected = [.. Enumerable.Range(0, size).SelectMany(r => Data(r, count, salt: 5))];
                return Compare(Read(output), expected, dtype);
            }
            case "reducescatter":
            {
                int total = count * size;
                using torch.Tensor input = Tensor(Data(rank, total, salt: 7), dtype);
                using torch.Tensor output = torch.full(count, Sentinel, dtype: dtype);
                group.ReduceScatter(input, output, ReduceOp.Sum);
                double[] all = Reduce(size, total, ReduceOp.Sum, salt: 7);
                return Compare(Read(output), all[(rank * count)..((rank + 1) * count)], dtype);
            }
            case "sendrecv":
            {
                // A ring: every rank sends its data to the next and receives the previous one's.
                int next = (rank + 1) % size, previous = (rank + size - 1) % size;
                using torch.Tensor mine = Tensor(Data(rank, count, salt: 9), dtype);
                using torch.Tensor received = torch.full(count, Sentinel, dtype: dtype);
                if (rank % 2 == 0)
                {
                    group.Send(mine, next, tag: 4);
                    group.Recv(received, previous, tag: 4);
                }
                else
                {
                    group.Recv(received, previous, tag: 4);
                    group.Send(mine, next, tag: 4);
                }
                return Compare(Read(received), Data(previous, count, salt: 9), dtype);
            }
            case "barrier":
            {
                // Rank 0 arrives late by count milliseconds: every other rank must wait for it.
                group.Barrier();
                var clock = System.Diagnostics.Stopwatch.StartNew();
                if (rank == 0)
                {
                    Thread.Sleep(count);
                }
                group.Barrier();
                long waited = clock.ElapsedMilliseconds;
                return rank != 0 && waited < count * 8 / 10 ? $"left the barrier after {waited} ms, before rank 0 ({count} ms late)" : null;
            }
            case "errors":
                return Errors(group);
            case "die-exit":
            case "die-kill":
            case "hang":
                return Fail(group, scenario, dtype, count);
            case "datashard":
                return DataShardScenario.Run(group, count);
            case not null when scenario.StartsWith("ddp-", StringComparison.Ordinal):
                return DdpScenarios.Run(group, scenario, count);
            default:
                throw new ArgumentException($"unknown scenario {scenario}");
        }
    }

    private static double[] Reduce(int size, int count, ReduceOp op, int salt)
    {
        var result = new double[count];
        for (int i = 0; i < count; i++)
        {
            double acc = Value(0, i, salt);
            for (int r = 1; r < size; r++)
            {
                double v = Value(r, i, salt);
                acc = op switch
                {
                    ReduceOp.Min => Math.Min(acc, v),
                    ReduceOp.Max => Math.Max(acc, v),
                    _ => acc + v,
                };
            }
            result[i] = op == ReduceOp.Average ? acc / size : acc;
        }
        return result;
    }

    private static string? Compare(double[] actual, double[] expected, torch.ScalarType dtype)
    {
        if (actual.Length != expected.Length)
        {
            return $"length {actual.Length}, expected {expected.Length}";
        }
        double tolerance = dtype switch
        {
            torch.ScalarType.Float32 => 1e-6,
            torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => 1e-2,
            _ => 1e-12,
        };
        for (int i = 0; i < actual.Length; i++)
        {
            if (!(Math.Abs(actual[i] - expected[i]) <= tolerance * Math.Max(1.0, Math.Abs(expected[i]))))
            {
                return $"element {i}: {actual[i]}, expected {expected[i]}";
            }
        }
        return null;
    }

    /// <summary>Local argument checks: each must throw before any MPI call, so ranks need not agree.</summary>
    private static string? Errors(IProcessGroup group)
    {
        using torch.Tensor flags = torch.zeros(4, dtype: torch.ScalarType.Bool);
        string? e = Expect<NotSupportedException>(() => group.AllReduce(flags), "does not support");
        if (e is not null)
        {
            return e;
        }
        using torch.Tensor matrix = torch.zeros(3, 4);
        using torch.Tensor transposed = matrix.t();
        e = Expect<ArgumentException>(() => group.AllReduce(transposed), "contiguous");
        if (e is not null)
        {
            return e;
        }
        using torch.Tensor small = torch.zeros(4);
        using torch.Tensor wrong = torch.zeros(5);
        e = Expect<ArgumentException>(() => group.AllGather(small, wrong), "world size");
        if (e is not null)
        {
            return e;
        }
        using torch.Tensor ints = torch.zeros(4, dtype: torch.ScalarType.Int32);
        e = Expect<NotSupportedException>(() => group.AllReduce(ints, ReduceOp.Average), "floating-point");
        if (e is not null)
        {
            return e;
        }
        e = Expect<ArgumentOutOfRangeException>(() => group.Broadcast(small, group.WorldSize), "rank");
        if (e is not null)
        {
            return e;
        }
        return WrongDevice(group, small);
    }

    /// <summary>A tensor on the meta device (there is no CUDA here) is refused by every call, naming device and backend.</summary>
    private static string? WrongDevice(IProcessGroup group, torch.Tensor cpu)
    {
        var meta = new torch.Device(DeviceType.META);
        using torch.Tensor tensor = torch.empty(4, device: meta);
        using torch.Tensor half = torch.empty(4, dtype: torch.ScalarType.Float16, device: meta);
        using torch.Tensor gathered = torch.empty(4L * group.WorldSize, device: meta);
        using torch.Tensor scattered = torch.empty(4L * group.WorldSize, device: meta);
        (string Name, Action Call)[] calls =
        [
            ("all_reduce", () => group.AllReduce(tensor, ReduceOp.Average)),
            ("all_reduce float16", () => group.AllReduce(half)),
            ("broadcast", () => group.Broadcast(tensor, 0)),
            ("all_gather output", () => group.AllGather(cpu, gathered)),
            ("all_gather input", () => group.AllGather(tensor, gathered)),
            ("reduce_scatter", () => group.ReduceScatter(scattered, tensor)),
            ("send", () => group.Send(tensor, 0)),
            ("recv", () => group.Recv(tensor, 0)),
        ];
        foreach ((string name, Action call) in calls)
        {
            foreach (string part in (string[])["mpi backend", "is on meta", "Move it to the CPU"])
            {
                if (Expect<ArgumentException>(call, part) is { } e)
                {
                    return $"{name} of a meta tensor: {e}";
                }
            }
        }
        return null;
    }

    /// <summary>
    /// Rank 1 exits (code 3), kills itself (SIGKILL) or sleeps 60 s where the others enter an all_reduce; whatever
    /// returns here is a failure, since the others must never see the all_reduce complete.
    /// </summary>
    private static string? Fail(IProcessGroup group, string scenario, torch.ScalarType dtype, int count)
    {
        group.Barrier();
        if (group.Rank == 1)
        {
            switch (scenario)
            {
                case "die-exit":
                    Environment.Exit(3);
                    break;
                case "die-kill":
                    System.Diagnostics.Process.GetCurrentProcess().Kill();
                    break;
                default:
                    Thread.Sleep(TimeSpan.FromSeconds(60));
                    return "slept 60 s and was not stopped";
            }
        }
        using torch.Tensor tensor = Tensor(Data(group.Rank, count), dtype);
        Console.WriteLine($"ENTER rank {group.Rank} all_reduce {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
        group.AllReduce(tensor);
        return $"{scenario}: the all_reduce completed without rank 1";
    }

    private static string? Expect<T>(Action action, string messagePart)
        where T : Exception
    {
        try
        {
            action();
        }
        catch (T e) when (e.Message.Contains(messagePart, StringComparison.Ordinal))
        {
            return null;
        }
        catch (Exception e)
        {
            return $"expected {typeof(T).Name} mentioning '{messagePart}', got {e.GetType().Name}: {e.Message}";
        }
        return $"expected {typeof(T).Name} mentioning '{messagePart}', nothing was thrown";
    }
}
