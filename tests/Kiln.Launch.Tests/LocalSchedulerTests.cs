using System.Diagnostics;
using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Local;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

/// <summary>The local scheduler with real processes (/bin/sh scripts), supervised inside the test process.</summary>
public sealed class LocalSchedulerTests
{
    [Fact]
    public async Task Submit_OneRoleThreeReplicas_SucceedsWithPerReplicaLogs()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("hello",
            LocalSandbox.Sh("echo", "echo \"out $KILN_REPLICA_ID of $KILN_NUM_REPLICAS ${app_id} $KILN_RANK0_HOST\"; echo \"err $KILN_REPLICA_ID\" >&2", replicas: 3)));

        handle.Scheduler.ShouldBe("local");
        handle.Session.ShouldBe("kiln");
        handle.AppId.ShouldStartWith("hello-");
        AppStatus status = await box.WaitForEndAsync(handle);

        status.State.ShouldBe(AppState.Succeeded, status.Message);
        status.NumRestarts.ShouldBe(0);
        status.Roles.ShouldHaveSingleItem().Replicas.Select(r => (r.Id, r.State, r.ExitCode)).ShouldBe([(0, AppState.Succeeded, 0), (1, AppState.Succeeded, 0), (2, AppState.Succeeded, 0)]);
        for (int i = 0; i < 3; i++)
        {
            List<string> lines = await box.LogAsync(handle, "echo", i);
            lines.ShouldBe([$"out {i} of 3 {handle.AppId} 127.0.0.1", $"err {i}"], ignoreOrder: true);
            (await box.LogAsync(handle, "echo", i, new LogQuery { Stream = "stderr" })).ShouldBe([$"err {i}"]);
            string logs = Path.Combine(box.Scheduler.AppDirectory(handle.AppId), "echo", i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            File.ReadAllText(Path.Combine(logs, "stdout.log")).ShouldBe($"out {i} of 3 {handle.AppId} 127.0.0.1\n");
            File.ReadAllText(Path.Combine(logs, "stderr.log")).ShouldBe($"err {i}\n");
        }
        (await box.LogAsync(handle, "echo", replica: null, new LogQuery { Stream = "stdout" })).Count.ShouldBe(3);
    }

    [Fact]
    public async Task Submit_TwoRolesOneReplicaFails_AppFailsWithTheCause_AndTheOthersAreStopped()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("pair",
            LocalSandbox.Sh("quick", "echo done", replicas: 2),
            LocalSandbox.Sh("work", "if [ \"$KILN_REPLICA_ID\" = 1 ]; then sleep 0.3; echo boom >&2; exit 3; fi; exec sleep 30", replicas: 2)));

        AppStatus status = await box.WaitForEndAsync(handle);

        status.State.ShouldBe(AppState.Failed);
        status.Message.ShouldBe("work[1] exited with code 3");
        status.StructuredError.ShouldNotBeNull().ShouldContain("work[1] exited with code 3");
        status.StructuredError.ShouldContain("boom");
        RoleStatus quick = status.Roles.Single(r => r.Role == "quick");
        quick.Replicas.ShouldAllBe(r => r.State == AppState.Succeeded && r.ExitCode == 0);
        RoleStatus work = status.Roles.Single(r => r.Role == "work");
        work.Replicas[1].State.ShouldBe(AppState.Failed);
        work.Replicas[1].ExitCode.ShouldBe(3);
        work.Replicas[0].State.ShouldBe(AppState.Cancelled);
        work.Replicas[0].ExitCode.ShouldBe(143);
    }

    [Theory]
    [InlineData(RetryPolicy.Replica, 1, 1, 2)]
    [InlineData(RetryPolicy.Role, 1, 2, 2)]
    [InlineData(RetryPolicy.Application, 2, 2, 2)]
    public async Task Retry_FailureOnce_RestartsWhatThePolicySays_AndCountsOneRestart(RetryPolicy policy, int startsOfOther, int startsOfSibling, int startsOfFailing)
    {
        await using var box = new LocalSandbox();
        // "other" is a second role; in "flaky", replica 1 fails on its first run only.
        string flaky = "echo x >> starts-$KILN_REPLICA_ID; if [ \"$KILN_REPLICA_ID\" = 1 ] && [ ! -e failed ]; then sleep 0.2; touch failed; exit 1; fi";
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("retry",
            LocalSandbox.Sh("other", "echo x >> starts-other; sleep 0.1"),
            LocalSandbox.Sh("flaky", flaky, replicas: 2, maxRetries: 1, policy: policy)));

        AppStatus status = await box.WaitForEndAsync(handle);

        status.State.ShouldBe(AppState.Succeeded, status.Message);
        status.NumRestarts.ShouldBe(1);
        box.Count("starts-other").ShouldBe(startsOfOther);
        box.Count("starts-0").ShouldBe(startsOfSibling);
        box.Count("starts-1").ShouldBe(startsOfFailing);
    }

    [Fact]
    public async Task Retry_Exhausted_FailsAfterMaxRetries()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("doomed", LocalSandbox.Sh("w", "echo x >> starts; exit 7", maxRetries: 2, policy: RetryPolicy.Replica)));

        AppStatus status = await box.WaitForEndAsync(handle);

        status.State.ShouldBe(AppState.Failed);
        status.NumRestarts.ShouldBe(2);
        status.Message.ShouldBe("w[0] exited with code 7 after 2 retries");
        box.Count("starts").ShouldBe(3);
    }

    [Fact]
    public async Task Cancel_RunningApp_EndsCancelled_AndEveryProcessIsGone_EvenOnesIgnoringSigterm()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("sleepy",
            LocalSandbox.Sh("polite", "sleep 30", replicas: 2),
            LocalSandbox.Sh("stubborn", "trap '' TERM; sleep 30")), grace: 0.5);
        await box.WaitAsync(handle, s => s.State == AppState.Running && s.Roles.All(r => r.Replicas.All(p => p.State == AppState.Running)));
        List<int> pids = ReplicaPids(box, handle);
        pids.Count.ShouldBe(3);
        pids.ShouldAllBe(pid => PosixProcesses.StartTime(pid) != null);

        var clock = Stopwatch.StartNew();
        await box.Scheduler.CancelAsync(handle.AppId, CancellationToken.None);

        AppStatus status = (await box.Scheduler.DescribeAsync(handle.AppId, CancellationToken.None)).ShouldNotBeNull();
        status.State.ShouldBe(AppState.Cancelled);
        status.Roles.SelectMany(r => r.Replicas).ShouldAllBe(r => r.State == AppState.Cancelled);
        status.Roles.Single(r => r.Role == "stubborn").Replicas[0].ExitCode.ShouldBe(137);
        clock.Elapsed.ShouldBeGreaterThan(TimeSpan.FromSeconds(0.4));
        pids.ShouldAllBe(pid => PosixProcesses.StartTime(pid) == null);
        // The stubborn replica's sleep went with its group (reaping an orphan by init can take a moment).
        (await EventuallyAsync(() => !PosixProcesses.GroupExists(pids[2]))).ShouldBeTrue();
        // Cancelling a finished app leaves it as it is.
        await box.Scheduler.CancelAsync(handle.AppId, CancellationToken.None);
        (await box.Scheduler.DescribeAsync(handle.AppId, CancellationToken.None))!.State.ShouldBe(AppState.Cancelled);
    }

    [Fact]
    public async Task Log_RegexSinceUntilAndTail()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("talk", LocalSandbox.Sh("t", "echo 'early a'; echo 'early b' >&2; sleep 0.4; echo 'late c'; sleep 0.2; echo 'late d' >&2")));

        // Follows the replica from its first line to its end.
        List<string> tailed = await box.LogAsync(handle, "t", 0, new LogQuery { Tail = true });
        // stdout and stderr are two pipes read by two threads: each keeps its order, but across them lines are in the
        // order they were read, which a loaded machine can delay past the script's sleeps.
        tailed.ShouldBe(["early a", "early b", "late c", "late d"], ignoreOrder: true);
        tailed.Where(l => l is "early a" or "late c").ShouldBe(["early a", "late c"]);
        tailed.Where(l => l is "early b" or "late d").ShouldBe(["early b", "late d"]);
        (await box.Scheduler.DescribeAsync(handle.AppId, CancellationToken.None))!.State.ShouldBe(AppState.Succeeded);

        (await box.LogAsync(handle, "t", 0, new LogQuery { Regex = "^late" })).ShouldBe(["late c", "late d"], ignoreOrder: true);
        (await box.LogAsync(handle, "t", 0, new LogQuery { Regex = "b|c", Stream = "stdout" })).ShouldBe(["late c"]);

        // Since/until against the recorded times: split at the widest gap between consecutive lines (the sleeps make
        // one of at least 0.2 s), until exclusive.
        List<LocalLogLine> recorded = ReadCombined(box, handle, "t", 0);
        recorded.Count.ShouldBe(4);
        int split = Enumerable.Range(0, 3).MaxBy(i => recorded[i + 1].T - recorded[i].T);
        (recorded[split + 1].T - recorded[split].T).ShouldBeGreaterThan(TimeSpan.Zero);
        DateTimeOffset middle = recorded[split].T + ((recorded[split + 1].T - recorded[split].T) / 2);
        (await box.LogAsync(handle, "t", 0, new LogQuery { Since = middle })).ShouldBe([.. recorded.Skip(split + 1).Select(l => l.L)]);
        (await box.LogAsync(handle, "t", 0, new LogQuery { Until = middle })).ShouldBe([.. recorded.Take(split + 1).Select(l => l.L)]);
        DateTimeOffset until = recorded[^1].T;
        (await box.LogAsync(handle, "t", 0, new LogQuery { Since = middle, Until = until }))
            .ShouldBe([.. recorded.Where(l => l.T >= middle && l.T < until).Select(l => l.L)]);
    }

    [Fact]
    public async Task Log_BadQueries_AreRefusedWithTheReason()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("q", LocalSandbox.Sh("r", "true")));
        await box.WaitForEndAsync(handle);

        Should.Throw<LaunchException>(() => box.Scheduler.LogAsync(handle.AppId, "nope", null, new LogQuery(), CancellationToken.None)).Message.ShouldContain("has no role nope");
        Should.Throw<LaunchException>(() => box.Scheduler.LogAsync(handle.AppId, "r", 3, new LogQuery(), CancellationToken.None)).Message.ShouldContain("replicas 0 to 0");
        Should.Throw<LaunchException>(() => box.Scheduler.LogAsync(handle.AppId, "r", 0, new LogQuery { Regex = "(" }, CancellationToken.None)).Message.ShouldContain("not a regular expression");
        Should.Throw<LaunchException>(() => box.Scheduler.LogAsync("missing-app", "r", 0, new LogQuery(), CancellationToken.None)).Message.ShouldContain("no app missing-app");
    }

    [Fact]
    public async Task DryRun_PrintsTheRequest_AndStartsNothing()
    {
        await using var box = new LocalSandbox();
        DryRunInfo info = box.Scheduler.SubmitDryRun(LocalSandbox.App("dry",
            new Role { Name = "r", Entrypoint = "echo", Args = ["${replica_id}", "${rank0_env}"], NumReplicas = 2, Env = new Dictionary<string, string> { ["A"] = "b c" } }),
            new Dictionary<string, string> { ["log_dir"] = "logs" });

        info.AppId.ShouldStartWith("dry-");
        info.Request.ShouldContain("[0] cd ");
        info.Request.ShouldContain("A='b c'");
        info.Request.ShouldContain("/echo 0 KILN_RANK0_HOST");
        info.Request.ShouldContain("/echo 1 KILN_RANK0_HOST");
        info.Request.ShouldContain(Path.Combine(box.Work, "logs", info.AppId, "r", "1"));
        info.Options["cancel_grace"].ShouldBe("10");
        Directory.Exists(Path.Combine(box.Root, "state")).ShouldBeFalse();
        (await box.Scheduler.ListAsync(CancellationToken.None)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData("no-such-program-kiln", "is not an executable on PATH")]
    [InlineData("./missing.sh", "is not an executable file")]
    [InlineData("", "has no entrypoint")]
    public async Task DryRun_MissingEntrypoint_IsRefused(string entrypoint, string message)
    {
        await using var box = new LocalSandbox();
        Should.Throw<LaunchException>(() => box.Scheduler.SubmitDryRun(LocalSandbox.App("x", new Role { Name = "r", Entrypoint = entrypoint }), new Dictionary<string, string>()))
            .Message.ShouldContain(message);
    }

    [Theory]
    [InlineData("colour", "blue", "unknown run option \"colour\"")]
    [InlineData("cancel_grace", "soon", "cancel_grace=soon is not a number")]
    public async Task DryRun_BadRunOption_IsRefused(string key, string value, string message)
    {
        await using var box = new LocalSandbox();
        Should.Throw<LaunchException>(() => box.Scheduler.SubmitDryRun(LocalSandbox.App("x", LocalSandbox.Sh("r", "true")), new Dictionary<string, string> { [key] = value }))
            .Message.ShouldContain(message);
    }

    [Fact]
    public async Task Describe_SupervisorGoneWithoutAnEnd_IsUnknown_AndCancelStillStopsTheReplicas()
    {
        await using var box = new LocalSandbox();
        AppHandle handle = await box.SubmitAsync(LocalSandbox.App("orphan", LocalSandbox.Sh("r", "exec sleep 30")), grace: 0.5);
        await box.WaitAsync(handle, s => s.Roles[0].Replicas[0].State == AppState.Running);
        int pid = ReplicaPids(box, handle).Single();
        // Pretend the supervisor was another process that died: point the state at a finished process.
        using (Process done = Process.Start("/bin/true")!)
        {
            await done.WaitForExitAsync();
            var files = new LocalAppFiles(box.Scheduler.AppDirectory(handle.AppId));
            // Stop the in-process supervisor's writes from racing: it only writes on events, and none comes while sleep runs.
            LocalAppState state = files.ReadState()!;
            state.Supervisor = new ProcessIdentity(done.Id, 1);
            files.WriteState(state);
        }

        AppStatus status = (await box.Scheduler.DescribeAsync(handle.AppId, CancellationToken.None))!;
        status.State.ShouldBe(AppState.Unknown);
        status.Message.ShouldContain("ended without recording an end");

        await box.Scheduler.CancelAsync(handle.AppId, CancellationToken.None);
        (await box.Scheduler.DescribeAsync(handle.AppId, CancellationToken.None))!.State.ShouldBe(AppState.Cancelled);
        PosixProcesses.StartTime(pid).ShouldBeNull();
    }

    [Fact]
    public async Task List_ShowsEveryApp_AndUnknownAppsAreNull()
    {
        await using var box = new LocalSandbox();
        AppHandle first = await box.SubmitAsync(LocalSandbox.App("one", LocalSandbox.Sh("r", "true")));
        AppHandle second = await box.SubmitAsync(LocalSandbox.App("two", LocalSandbox.Sh("r", "exit 1")));
        await box.WaitForEndAsync(first);
        await box.WaitForEndAsync(second);

        IReadOnlyList<ListedApp> apps = await box.Scheduler.ListAsync(CancellationToken.None);

        apps.Select(a => (a.Handle, a.State, a.Name)).ShouldBe([(first, AppState.Succeeded, "one"), (second, AppState.Failed, "two")]);
        (await box.Scheduler.DescribeAsync("nope-123", CancellationToken.None)).ShouldBeNull();
        (await box.Scheduler.DescribeAsync("../etc", CancellationToken.None)).ShouldBeNull();
        await Should.ThrowAsync<LaunchException>(() => box.Scheduler.CancelAsync("nope-123", CancellationToken.None));
        box.Scheduler.DescribeApp(first.AppId).ShouldNotBeNull().Roles[0].Args.ShouldBe(["-c", "true"]);
    }

    private static async Task<bool> EventuallyAsync(Func<bool> condition)
    {
        for (int i = 0; i < 100 && !condition(); i++)
        {
            await Task.Delay(20);
        }
        return condition();
    }

    private static List<int> ReplicaPids(LocalSandbox box, AppHandle handle) =>
        [.. new LocalAppFiles(box.Scheduler.AppDirectory(handle.AppId)).ReadState()!.Roles.SelectMany(r => r.Replicas).Select(r => r.Process!.Pid)];

    private static List<LocalLogLine> ReadCombined(LocalSandbox box, AppHandle handle, string role, int replica) =>
        [.. File.ReadAllLines(Path.Combine(box.Scheduler.AppDirectory(handle.AppId), role, replica.ToString(System.Globalization.CultureInfo.InvariantCulture), "combined.jsonl"))
            .Select(l => LocalJson.ReadLogLine(System.Text.Encoding.UTF8.GetBytes(l))!)];
}
