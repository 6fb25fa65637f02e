using Kiln.Distributed.Nccl;
using TorchSharp;

namespace Kiln.Distributed.Tests;

/// <summary>
/// The NCCL watchdog's bookkeeping over fake CUDA events (the real ones are exercised on a GPU host by
/// benchmarks/distributed/gpu-all.sh, whose dead-rank check kills one rank and times the other's exit).
/// </summary>
public sealed class NcclWatchdogTests
{
    /// <summary>Events that complete when the test says so.</summary>
    private sealed class FakeGpu : NcclWatchdog.IGpuEvents
    {
        private IntPtr _next = 1;

        public HashSet<IntPtr> Created { get; } = [];

        public HashSet<IntPtr> Destroyed { get; } = [];

        public HashSet<IntPtr> Done { get; } = [];

        public List<IntPtr> Recorded { get; } = [];

        public IntPtr Failing { get; set; }

        public string? Error { get; set; }

        public IntPtr CreateEvent()
        {
            IntPtr e = _next++;
            Created.Add(e);
            return e;
        }

        public void RecordEvent(IntPtr cudaEvent, IntPtr stream)
        {
            Done.Remove(cudaEvent);
            Recorded.Add(cudaEvent);
        }

        public bool IsComplete(IntPtr cudaEvent) => cudaEvent == Failing
            ? throw new DistributedException("cudaEventQuery failed: an illegal memory access was encountered")
            : Done.Contains(cudaEvent);

        public void DestroyEvent(IntPtr cudaEvent) => Destroyed.Add(cudaEvent);

        public string? AsyncError() => Error;
    }

    private static NcclWatchdog Manual(FakeGpu gpu, TimeSpan timeout, List<string> failures) =>
        new(gpu, timeout, rank: 1, worldSize: 2, failures.Add);

    [Fact]
    public void CompletedCollectives_AreRetired_AndTheirEventsReused()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using NcclWatchdog watchdog = Manual(gpu, TimeSpan.FromMinutes(10), failures);
        watchdog.Begin("all_reduce", 10, torch.ScalarType.Float32);
        watchdog.Queued(IntPtr.Zero);
        watchdog.Begin("broadcast", 10, torch.ScalarType.Float32);
        watchdog.Queued(IntPtr.Zero);
        watchdog.PendingCount.ShouldBe(2);
        gpu.Done.UnionWith(gpu.Recorded);
        watchdog.Check().ShouldBeNull();
        watchdog.PendingCount.ShouldBe(0);
        for (int i = 0; i < 50; i++)
        {
            watchdog.Begin("all_reduce", 10, torch.ScalarType.Float32);
            watchdog.Queued(IntPtr.Zero);
            gpu.Done.Add(gpu.Recorded[^1]);
            watchdog.Check().ShouldBeNull();
        }
        gpu.Created.Count.ShouldBe(2); // a step of collectives allocates events only once
        failures.ShouldBeEmpty();
    }

    [Fact]
    public void APendingCollective_WithinTheTimeout_IsNoFailure_ButPastItIsNamed()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using NcclWatchdog watchdog = Manual(gpu, TimeSpan.FromMilliseconds(300), failures);
        watchdog.Begin("all_reduce", 1000, torch.ScalarType.BFloat16);
        watchdog.Queued(IntPtr.Zero);
        watchdog.Begin("recv", 7, torch.ScalarType.Int64, peer: 0);
        watchdog.Queued(IntPtr.Zero);
        gpu.Done.Add(gpu.Recorded[0]);
        watchdog.Check().ShouldBeNull();
        Thread.Sleep(450);
        string? failure = watchdog.Check();
        failure.ShouldNotBeNull();
        failure.ShouldStartWith("recv #2 (rank 1 of 2, 7 int64 elements, from rank 0) did not complete within 0.3 s");
        failure.ShouldContain("another rank died");
    }

    [Fact]
    public void TheThread_CallsOnFailureOnce_WhenACollectiveHangs()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using var fired = new ManualResetEventSlim();
        using var watchdog = new NcclWatchdog(gpu, TimeSpan.FromMilliseconds(200), 0, 2, d =>
        {
            lock (failures)
            {
                failures.Add(d);
            }
            fired.Set();
        });
        watchdog.Interval.ShouldBe(TimeSpan.FromMilliseconds(25));
        watchdog.Begin("all_reduce", 4, torch.ScalarType.Float32);
        watchdog.Queued(IntPtr.Zero);
        fired.Wait(TimeSpan.FromSeconds(10)).ShouldBeTrue();
        Thread.Sleep(200);
        lock (failures)
        {
            failures.Count.ShouldBe(1);
            failures[0].ShouldStartWith("all_reduce #1 (rank 0 of 2, 4 float32 elements) did not complete within 0.2 s");
        }
    }

    [Fact]
    public void ACallThatBlocksOnTheHost_IsNamedAfterTheTimeout_AndAFailedCallIsForgotten()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using NcclWatchdog watchdog = Manual(gpu, TimeSpan.FromMilliseconds(200), failures);
        watchdog.Begin("broadcast", 5, torch.ScalarType.Float16);
        watchdog.Abandon();
        Thread.Sleep(300);
        watchdog.Check().ShouldBeNull();
        // NCCL connects to a peer at its first collective; a dead peer keeps the call itself from returning.
        watchdog.Begin("all_reduce", 1000, torch.ScalarType.Float32);
        watchdog.Check().ShouldBeNull();
        Thread.Sleep(300);
        watchdog.Check()!.ShouldStartWith("all_reduce #2 (rank 1 of 2, 1000 float32 elements) did not complete within 0.2 s");
        gpu.Created.ShouldBeEmpty();
    }

    [Fact]
    public void AsyncErrors_AndCudaErrors_AreFailures_NamingTheCollective()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using NcclWatchdog watchdog = Manual(gpu, TimeSpan.FromMinutes(10), failures);
        watchdog.Begin("all_gather", 3, torch.ScalarType.Float64);
        watchdog.Queued(IntPtr.Zero);
        gpu.Failing = gpu.Recorded[0];
        watchdog.Check().ShouldBe("all_gather #1 failed on the GPU: cudaEventQuery failed: an illegal memory access was encountered; aborting the job");
        gpu.Failing = IntPtr.Zero;
        gpu.Error = "remote process exited or there was a network error";
        watchdog.Check().ShouldBe("NCCL reported an asynchronous error on rank 1 of 2: remote process exited or there was a network error; the oldest collective not yet complete is all_gather #1; aborting the job");
    }

    [Fact]
    public void WithoutATimeout_NothingIsTracked_AndDisposeDestroysEveryEvent()
    {
        var gpu = new FakeGpu();
        var failures = new List<string>();
        using (NcclWatchdog off = Manual(gpu, Timeout.InfiniteTimeSpan, failures))
        {
            off.Begin("all_reduce", 1, torch.ScalarType.Float32);
            off.Queued(IntPtr.Zero);
            off.PendingCount.ShouldBe(0);
        }
        gpu.Created.ShouldBeEmpty();
        NcclWatchdog on = Manual(gpu, TimeSpan.FromMinutes(1), failures);
        on.Begin("all_reduce", 1, torch.ScalarType.Float32);
        on.Queued(IntPtr.Zero);
        on.Begin("all_reduce", 1, torch.ScalarType.Float32);
        on.Queued(IntPtr.Zero);
        gpu.Done.Add(gpu.Recorded[0]);
        on.Check().ShouldBeNull();
        on.Dispose();
        gpu.Destroyed.SetEquals(gpu.Created).ShouldBeTrue();
        Should.Throw<ObjectDisposedException>(() => on.Begin("all_reduce", 1, torch.ScalarType.Float32));
    }
}
