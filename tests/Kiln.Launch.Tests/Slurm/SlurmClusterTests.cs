using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Slurm;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests.Slurm;

/// <summary>The slurm scheduler against the real single-node cluster of <see cref="SlurmCluster"/>.</summary>
[Collection(SlurmClusterGroup.Name)]
public sealed class SlurmClusterTests(SlurmCluster cluster)
{
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(20);

    private SlurmScheduler CreateSut() => new(cluster.SlurmConf);

    [Fact]
    public async Task Submit_TwoReplicaEcho_SucceedsWithPerReplicaLogs()
    {
        SlurmScheduler sut = CreateSut();
        AppDef app = Echo("echo", replicas: 2, "echo hello from $KILN_REPLICA_ID of ${app_id}; echo to-stderr >&2");
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "echo");
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Succeeded, status.Message);
        status.Roles.Single().Replicas.Select(r => (r.Id, r.State, r.ExitCode)).ShouldBe([(0, AppState.Succeeded, 0), (1, AppState.Succeeded, 0)]);
        handle.ToString().ShouldBe($"slurm:///{handle.AppId}");
        for (int replica = 0; replica < 2; replica++)
        {
            List<string> stdout = await ToListAsync(sut.LogAsync(handle.AppId, "echo", replica, new LogQuery { Stream = "stdout" }, timeout.Token));
            stdout.ShouldBe([$"hello from {replica} of {handle.AppId}"]);
            List<string> both = await ToListAsync(sut.LogAsync(handle.AppId, "echo", replica, new LogQuery(), timeout.Token));
            both.ShouldBe([$"hello from {replica} of {handle.AppId}", "to-stderr"]);
        }
        List<string> matching = await ToListAsync(sut.LogAsync(handle.AppId, "echo", null, new LogQuery { Regex = "from 1" }, timeout.Token));
        matching.ShouldBe([$"hello from 1 of {handle.AppId}"]);
        sut.UseSqueueJson.ShouldBeTrue(); // Debian 12's squeue 22.05 has --json; the text format has its own test
    }

    [Fact]
    public async Task Submit_FailingReplica_FailsWithTheReplicaAndItsStderr()
    {
        SlurmScheduler sut = CreateSut();
        AppDef app = Echo("fail", replicas: 2, "if [ \"$KILN_REPLICA_ID\" = 1 ]; then echo broken >&2; exit 3; fi; sleep 30");
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "fail");
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Failed, status.Message);
        ReplicaStatus failed = status.Roles.Single().Replicas[1];
        failed.State.ShouldBe(AppState.Failed);
        failed.ExitCode.ShouldBe(3);
        status.StructuredError.ShouldNotBeNull().ShouldStartWith("fail/1 exited with 3");
        status.StructuredError.ShouldContain("broken");
    }

    [Fact]
    public async Task Cancel_SleepingApp_IsCancelledAndListed()
    {
        SlurmScheduler sut = CreateSut();
        AppDef app = Echo("sleeper", replicas: 1, "echo started; sleep 60");
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "sleeper");
        await WaitForAsync(sut, handle.AppId, s => s.State == AppState.Running, timeout.Token);
        await sut.CancelAsync(handle.AppId, timeout.Token);
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Cancelled, status.Message);
        IReadOnlyList<ListedApp> listed = await sut.ListAsync(timeout.Token);
        listed.ShouldContain(a => a.Handle.AppId == handle.AppId && a.State == AppState.Cancelled && a.Name == "sleeper");
        await sut.CancelAsync(handle.AppId, timeout.Token); // a finished app is left as it is
    }

    [Fact]
    public async Task Submit_TwoRoles_RunsAsHeterogeneousJobWithRank0Host()
    {
        SlurmScheduler sut = CreateSut();
        var app = new AppDef
        {
            Name = "twoRoles",
            Roles =
            [
                Role("trainer", 2, "echo trainer $KILN_REPLICA_ID rank0=$(printenv ${rank0_env}) $KILN_RANK0_NODE on $SLURMD_NODENAME"),
                Role("reader", 1, "echo reader rank0=$(printenv ${rank0_env}) $KILN_RANK0_NODE on $SLURMD_NODENAME"),
            ],
        };
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "het");
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Succeeded, status.Message);
        status.Roles.Select(r => (r.Role, r.Replicas.Count)).ShouldBe([("trainer", 2), ("reader", 1)]);
        status.Roles.SelectMany(r => r.Replicas).ShouldAllBe(r => r.State == AppState.Succeeded);
        string trainer0 = (await ToListAsync(sut.LogAsync(handle.AppId, "trainer", 0, new LogQuery { Stream = "stdout" }, timeout.Token))).Single();
        string reader0 = (await ToListAsync(sut.LogAsync(handle.AppId, "reader", 0, new LogQuery { Stream = "stdout" }, timeout.Token))).Single();
        string[] words = trainer0.Split("rank0=")[1].Split(' ');
        (string rank0Host, string rank0Node) = (words[0], words[1]);
        rank0Host.ShouldBe("127.0.0.1"); // the node's NodeAddr in the test cluster
        rank0Node.ShouldStartWith("kiln-");
        trainer0.ShouldEndWith("on " + rank0Node); // replica 0 of the first role runs on the rank-0 node
        reader0.ShouldContain($"rank0={rank0Host} {rank0Node}");
        reader0.ShouldNotEndWith("on " + rank0Node); // components of a heterogeneous job get nodes of their own
    }

    [Fact]
    public async Task Log_Tail_FollowsUntilTheAppEnds()
    {
        SlurmScheduler sut = CreateSut();
        AppDef app = Echo("tail", replicas: 1, "for i in 1 2 3; do echo line $i; sleep 0.3; done");
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "tail");
        List<string> lines = await ToListAsync(sut.LogAsync(handle.AppId, "tail", 0, new LogQuery { Tail = true, Stream = "stdout" }, timeout.Token));

        lines.ShouldBe(["line 1", "line 2", "line 3"]);
        (await sut.DescribeAsync(handle.AppId, timeout.Token)).ShouldNotBeNull().State.ShouldBe(AppState.Succeeded);
    }

    [Fact]
    public async Task Describe_WithSqueueText_ReadsTheSameStatesAndLists()
    {
        SlurmScheduler sut = new(cluster.SlurmConf) { UseSqueueJson = false };
        AppDef app = Echo("plain", replicas: 2, "echo text mode $KILN_REPLICA_ID");
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "text");
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Succeeded, status.Message);
        status.Roles.Single().Replicas.Select(r => (r.State, r.Hostname.StartsWith("kiln-", StringComparison.Ordinal))).ShouldBe([(AppState.Succeeded, true), (AppState.Succeeded, true)]);
        (await sut.ListAsync(timeout.Token)).ShouldContain(a => a.Handle.AppId == handle.AppId && a.State == AppState.Succeeded && a.Name == "plain");
        (await sut.DescribeAsync("987654", timeout.Token)).ShouldBeNull();
    }

    [Fact]
    public async Task Submit_MaxRetries_RequeuesTheJobOnceThenFails()
    {
        SlurmScheduler sut = CreateSut();
        var app = new AppDef
        {
            Name = "retry",
            Roles = [Role("retry", 1, "echo attempt ${SLURM_RESTART_COUNT:-0}; exit 3") with { MaxRetries = 1 }],
        };
        using var timeout = new CancellationTokenSource(s_wait);

        AppHandle handle = await SubmitAsync(sut, app, "retry");
        // Slurm holds a requeued job back for a while (reason BeginTime); the test cluster lets it start now.
        AppStatus requeued = await WaitForAsync(sut, handle.AppId, s => s.Message.Contains("BeginTime", StringComparison.Ordinal) || s.State.IsTerminal(), timeout.Token);
        requeued.State.ShouldBe(AppState.Pending, requeued.Message);
        await Task.Delay(TimeSpan.FromSeconds(2), timeout.Token); // the first run's step and batch script clean up (what the delay is for)
        await cluster.ScontrolAsync(["update", "JobId=" + handle.AppId, "StartTime=now"], timeout.Token);
        AppStatus status = await WaitForTerminalAsync(sut, handle.AppId, timeout.Token);

        status.State.ShouldBe(AppState.Failed, status.Message);
        status.NumRestarts.ShouldBe(1);
        status.Roles.Single().Replicas.Single().ExitCode.ShouldBe(3);
        List<string> lines = await ToListAsync(sut.LogAsync(handle.AppId, "retry", 0, new LogQuery { Stream = "stdout" }, timeout.Token));
        lines.ShouldBe(["attempt 0", "attempt 1"]);
    }

    [Fact]
    public async Task Describe_UnknownJob_IsNull()
    {
        using var timeout = new CancellationTokenSource(s_wait);
        (await CreateSut().DescribeAsync("987654", timeout.Token)).ShouldBeNull();
    }

    private async Task<AppHandle> SubmitAsync(SlurmScheduler sut, AppDef app, string folder)
    {
        using var timeout = new CancellationTokenSource(s_wait);
        DryRunInfo dryRun = sut.SubmitDryRun(app, new Dictionary<string, string> { ["job_dir"] = cluster.NewJobDir(folder), ["time"] = "5" });
        return await sut.SubmitAsync(dryRun, timeout.Token);
    }

    private static AppDef Echo(string name, int replicas, string shell) => new() { Name = name, Roles = [Role(name, replicas, shell)] };

    private static Role Role(string name, int replicas, string shell) => new()
    {
        Name = name,
        Entrypoint = "/bin/sh",
        Args = ["-c", shell],
        NumReplicas = replicas,
        Resource = new Resource(Cpu: 1, Gpu: 0, MemMB: 64),
    };

    private static Task<AppStatus> WaitForTerminalAsync(SlurmScheduler sut, string appId, CancellationToken cancellationToken) =>
        WaitForAsync(sut, appId, s => s.State.IsTerminal(), cancellationToken);

    private static async Task<AppStatus> WaitForAsync(SlurmScheduler sut, string appId, Func<AppStatus, bool> done, CancellationToken cancellationToken)
    {
        AppStatus? last = null;
        try
        {
            while (true)
            {
                last = await sut.DescribeAsync(appId, cancellationToken);
                if (last is not null && done(last))
                {
                    return last;
                }
                await Task.Delay(100, cancellationToken);
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"slurm job {appId} did not reach the expected state in {s_wait.TotalSeconds} s; last: {last?.State} {last?.Message}");
        }
    }

    private static async Task<List<string>> ToListAsync(IAsyncEnumerable<string> lines)
    {
        var result = new List<string>();
        await foreach (string line in lines)
        {
            result.Add(line);
        }
        return result;
    }
}
