using System.Globalization;
using System.Text.RegularExpressions;
using Kiln.Distributed.Mpi;
using TorchSharp;
using Xunit.Abstractions;

namespace Kiln.Distributed.Tests;

/// <summary>
/// A rank that dies or hangs must not hang the others: mpirun ends the job when a rank exits, and the collective
/// watchdog aborts it when a collective runs past <see cref="ProcessGroupOptions.Timeout"/>.
/// </summary>
public sealed partial class FailureTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2, "die-exit")]
    [InlineData(3, "die-exit")]
    [InlineData(3, "die-kill")]
    public async Task A_rank_that_dies_before_an_all_reduce_ends_the_whole_job(int ranks, string scenario)
    {
        MpiRun.Result result = await MpiRun.RunAsync(ranks, [scenario, "float32", "1000"], timeoutSeconds: 40);
        Report(ranks, scenario, result);
        result.ExitCode.ShouldNotBe(0, result.ToString());
        result.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20), result.ToString());
        result.OkLines.ShouldBe(0, result.ToString());
        (result.Stdout + result.Stderr).ShouldNotContain("completed without rank 1", Case.Sensitive, result.ToString());
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public async Task A_hung_rank_makes_the_watchdog_abort_the_whole_job(int ranks)
    {
        MpiRun.Result result = await MpiRun.RunAsync(ranks, ["hang", "float32", "1000", "2"], timeoutSeconds: 40);
        Report(ranks, "hang", result);
        result.ExitCode.ShouldBe(MpiProcessGroup.TimeoutAbortCode, result.ToString());
        result.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(15), result.ToString());
        result.OkLines.ShouldBe(0, result.ToString());
        result.Stderr.ShouldMatch(
            $@"Kiln\.Distributed: all_reduce #2 \(rank [02] of {ranks}, 1000 float32 elements\) did not complete within 2 s: " +
            "another rank died, hung or called a different collective; aborting the job",
            result.ToString());
        result.Stderr.ShouldMatch($@"LOG 1600 Critical all_reduce #2 \(rank [02] of {ranks}, ", result.ToString());
        if (SinceLastEnter(result) is { } detected)
        {
            detected.ShouldBeGreaterThan(TimeSpan.FromSeconds(1.9), result.ToString());
        }
    }

    [Fact]
    public async Task The_watchdog_reports_a_call_that_runs_past_the_timeout_once()
    {
        var fired = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        int calls = 0;
        using var watchdog = new CollectiveWatchdog(TimeSpan.FromMilliseconds(100), 1, 3, message =>
        {
            Interlocked.Increment(ref calls);
            fired.TrySetResult(message);
        });
        watchdog.Begin("barrier", -1, default);
        watchdog.End();
        watchdog.Begin("all_reduce", 1000, torch.ScalarType.Float32);
        string message = await fired.Task.WaitAsync(TimeSpan.FromSeconds(10));
        message.ShouldBe("all_reduce #2 (rank 1 of 3, 1000 float32 elements) did not complete within 0.1 s: another rank died, hung or called a different collective; aborting the job");
        await Task.Delay(300);
        calls.ShouldBe(1);
        watchdog.IsWatching.ShouldBeFalse();
    }

    [Fact]
    public async Task The_watchdog_ignores_calls_that_end_in_time_and_idle_time_and_stops_on_Dispose()
    {
        int calls = 0;
        var watchdog = new CollectiveWatchdog(TimeSpan.FromMilliseconds(200), 0, 2, _ => Interlocked.Increment(ref calls));
        watchdog.IsWatching.ShouldBeTrue();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.ElapsedMilliseconds < 500)
        {
            watchdog.Begin("broadcast", 7, torch.ScalarType.Float64);
            Thread.Sleep(20);
            watchdog.End();
        }
        await Task.Delay(500);
        calls.ShouldBe(0);
        watchdog.Dispose();
        watchdog.IsWatching.ShouldBeFalse();
    }

    [Fact]
    public void Recording_a_call_allocates_nothing_and_an_infinite_timeout_starts_no_thread()
    {
        using var watchdog = new CollectiveWatchdog(Timeout.InfiniteTimeSpan, 0, 2, _ => { });
        watchdog.IsWatching.ShouldBeFalse();
        watchdog.Begin("all_reduce", 1, torch.ScalarType.Float32);
        watchdog.End();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            watchdog.Begin("all_reduce", i, torch.ScalarType.Float32);
            watchdog.End();
        }
        (GC.GetAllocatedBytesForCurrentThread() - before).ShouldBe(0);
    }

    [Fact]
    public void The_description_names_peers_calls_without_tensors_and_minutes()
    {
        CollectiveWatchdog.Describe("recv", 5, 0, 2, 1, torch.ScalarType.BFloat16, 1, TimeSpan.FromMinutes(10))
            .ShouldStartWith("recv #5 (rank 0 of 2, 1 bfloat16 element, from rank 1) did not complete within 10 min: ");
        CollectiveWatchdog.Describe("send", 6, 1, 2, 3, torch.ScalarType.Int64, 0, TimeSpan.FromSeconds(90))
            .ShouldStartWith("send #6 (rank 1 of 2, 3 int64 elements, to rank 0) did not complete within 90 s: ");
        CollectiveWatchdog.Describe("barrier", 1, 2, 3, -1, default, -1, TimeSpan.FromSeconds(2))
            .ShouldStartWith("barrier #1 (rank 2 of 3) did not complete within 2 s: ");
    }

    [Fact]
    public void A_timeout_must_be_positive_or_infinite()
    {
        Should.Throw<ArgumentOutOfRangeException>(() => new ProcessGroupOptions { Timeout = TimeSpan.Zero });
        new ProcessGroupOptions { Timeout = Timeout.InfiniteTimeSpan }.Timeout.ShouldBe(Timeout.InfiniteTimeSpan);
        ProcessGroupOptions.Default.Timeout.ShouldBe(TimeSpan.FromMinutes(10));
    }

    /// <summary>From the last survivor's "ENTER" line (written just before its all_reduce) to mpirun's exit.</summary>
    private static TimeSpan? SinceLastEnter(MpiRun.Result result)
    {
        long[] entered = [.. EnterLine().Matches(result.Stdout).Select(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];
        return entered.Length == 0 ? null : result.ExitedAt - DateTimeOffset.FromUnixTimeMilliseconds(entered.Max());
    }

    private void Report(int ranks, string scenario, MpiRun.Result result) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{scenario} -n {ranks}: mpirun exit {result.ExitCode} after {result.Elapsed.TotalSeconds:0.00} s; " +
            $"{SinceLastEnter(result)?.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture) ?? "?"} s after the survivors entered the all_reduce"));

    [GeneratedRegex(@"ENTER rank \d+ all_reduce (\d+)")]
    private static partial Regex EnterLine();
}
