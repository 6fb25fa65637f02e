using System.Diagnostics;

namespace Kiln.Serve.Benchmarks;

/// <summary>What the model does called in-process, without a server: items per second and per-call latency.</summary>
internal sealed record CeilingResult(int Threads, int ItemsPerCall, long Calls, double Seconds, double ItemsPerSecond, LatencySummary CallLatency);

/// <summary>Runs in-process calls of a model on dedicated threads, closed loop, for a bounded time and count.</summary>
internal static class InProcessCeiling
{
    /// <summary>
    /// Each of <paramref name="threads"/> threads gets its own call from <paramref name="createCall"/> (which may hold
    /// per-thread buffers), makes one unrecorded call, then runs it back to back: <paramref name="warmupSeconds"/>
    /// unrecorded, then the calls that end within the next <paramref name="seconds"/> are counted. At most
    /// <paramref name="maxCalls"/> calls are started in all. Recorded latencies (Stopwatch ticks) are also added to <paramref name="sink"/>.
    /// </summary>
    public static CeilingResult Measure(int threads, int itemsPerCall, Func<Action> createCall, double warmupSeconds, double seconds, long maxCalls, List<long>? sink = null)
    {
        var latencies = new List<long>[threads];
        var lastDone = new long[threads];
        var errors = new Exception?[threads];
        long started = 0, measureStart = 0, measureEnd = 0;
        using var firstCallsDone = new CountdownEvent(threads);
        using var go = new ManualResetEventSlim(false);
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int index = t;
            latencies[index] = new List<long>(4096);
            workers[index] = new Thread(() =>
            {
                bool signalled = false;
                try
                {
                    Action call = createCall();
                    call(); // allocations and lazy initialisation, not counted
                    firstCallsDone.Signal();
                    signalled = true;
                    go.Wait();
                    List<long> mine = latencies[index];
                    long from = Volatile.Read(ref measureStart), end = Volatile.Read(ref measureEnd);
                    while (true)
                    {
                        long start = Stopwatch.GetTimestamp();
                        if (start >= end || Interlocked.Increment(ref started) > maxCalls)
                        {
                            break;
                        }
                        call();
                        long done = Stopwatch.GetTimestamp();
                        if (done >= from && done <= end)
                        {
                            mine.Add(done - start);
                            lastDone[index] = done;
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors[index] = ex;
                    if (!signalled)
                    {
                        firstCallsDone.Signal();
                    }
                }
            })
            { IsBackground = true, Name = $"ceiling-{index}" };
            workers[index].Start();
        }
        firstCallsDone.Wait();
        long now = Stopwatch.GetTimestamp();
        measureStart = now + (long)(warmupSeconds * Stopwatch.Frequency);
        measureEnd = measureStart + (long)(seconds * Stopwatch.Frequency);
        go.Set();
        foreach (Thread worker in workers)
        {
            worker.Join();
        }
        if (errors.FirstOrDefault(e => e is not null) is { } error)
        {
            throw new InvalidOperationException($"An in-process call failed: {error.Message}", error);
        }
        long calls = latencies.Sum(l => (long)l.Count);
        foreach (List<long> mine in latencies)
        {
            sink?.AddRange(mine);
        }
        // A run cut short by maxCalls is measured up to its last call; otherwise over the whole window.
        bool capped = Interlocked.Read(ref started) > maxCalls;
        double elapsed = capped && calls > 0 ? Math.Max(1, lastDone.Max() - measureStart) / (double)Stopwatch.Frequency : seconds;
        return new CeilingResult(threads, itemsPerCall, calls, elapsed, calls * itemsPerCall / elapsed, LatencySummary.FromTicks(latencies));
    }
}
