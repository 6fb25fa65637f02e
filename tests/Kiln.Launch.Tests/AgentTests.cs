using System.Text.Json.Nodes;
using Kiln.Launch.Agent;

namespace Kiln.Launch.Tests;

/// <summary>The elastic agent with real /bin/sh workers: environment, restarts, the job-wide budget, error files.</summary>
public sealed class AgentTests
{
    private static AgentOptions Options(string script, int nproc = 1, string runId = "job", int nodes = 1, string? endpoint = null, int maxRestarts = 0, string? logDir = null, string conf = "") => new()
    {
        Entrypoint = [script],
        ProcessesPerNode = nproc,
        MinNodes = nodes,
        MaxNodes = nodes,
        Backend = endpoint is null ? "static" : "c10d",
        Endpoint = endpoint,
        Standalone = endpoint is null,
        RunId = runId,
        MaxRestarts = maxRestarts,
        LogDirectory = logDir,
        MonitorInterval = TimeSpan.FromMilliseconds(50),
        StopGracePeriod = TimeSpan.FromSeconds(2),
        Conf = AgentOptions.ParseConf("heartbeat_timeout=2,join_timeout=20,exit_barrier_timeout=10," + conf),
    };

    [Fact]
    public async Task Standalone_WorkersSeeTorchrunsEnvironment()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("env > \"$OUT/env_$LOCAL_RANK\"");
        AgentResult result = await new ElasticAgent(Options(script, nproc: 2, runId: "env-job")).RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));

        result.ExitCode.ShouldBe(0);
        result.State.ShouldBe("SUCCEEDED");
        for (int local = 0; local < 2; local++)
        {
            Dictionary<string, string> env = scratch.ReadEnv($"env_{local}");
            env["RANK"].ShouldBe(local.ToString(System.Globalization.CultureInfo.InvariantCulture));
            env["LOCAL_RANK"].ShouldBe(env["RANK"]);
            env["ROLE_RANK"].ShouldBe(env["RANK"]);
            env["WORLD_SIZE"].ShouldBe("2");
            env["ROLE_WORLD_SIZE"].ShouldBe("2");
            env["LOCAL_WORLD_SIZE"].ShouldBe("2");
            env["GROUP_RANK"].ShouldBe("0");
            env["GROUP_WORLD_SIZE"].ShouldBe("1");
            env["ROLE_NAME"].ShouldBe("default");
            env["MASTER_ADDR"].ShouldBe("127.0.0.1");
            int.Parse(env["MASTER_PORT"], System.Globalization.CultureInfo.InvariantCulture).ShouldBeGreaterThan(0);
            env["TORCHELASTIC_RESTART_COUNT"].ShouldBe("0");
            env["TORCHELASTIC_MAX_RESTARTS"].ShouldBe("0");
            env["TORCHELASTIC_RUN_ID"].ShouldBe("env-job");
            env["TORCHELASTIC_ERROR_FILE"].ShouldEndWith($"/attempt_0/{local}/error.json");
            env["OMP_NUM_THREADS"].ShouldBe(Environment.GetEnvironmentVariable("OMP_NUM_THREADS") ?? "1");
        }
        scratch.ReadEnv("env_0")["MASTER_PORT"].ShouldBe(scratch.ReadEnv("env_1")["MASTER_PORT"]);
    }

    [Fact]
    public async Task TwoNodes_OverTheEmbeddedStore_GetDistinctGroupRanksAndOneMaster()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("env > \"$OUT/env_$RANK\"");
        string endpoint = $"127.0.0.1:{AgentScratch.FreePort()}";
        AgentResult[] results = await Task.WhenAll(
            new ElasticAgent(Options(script, nproc: 2, nodes: 2, endpoint: endpoint)).RunAsync(CancellationToken.None),
            new ElasticAgent(Options(script, nproc: 2, nodes: 2, endpoint: endpoint)).RunAsync(CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(20));

        results.ShouldAllBe(r => r.ExitCode == 0);
        var envs = Enumerable.Range(0, 4).Select(r => scratch.ReadEnv($"env_{r}")).ToList();
        envs.ShouldAllBe(e => e["WORLD_SIZE"] == "4" && e["GROUP_WORLD_SIZE"] == "2" && e["LOCAL_WORLD_SIZE"] == "2");
        envs.Select(e => e["MASTER_PORT"]).Distinct().Count().ShouldBe(1);
        envs.Select(e => e["GROUP_RANK"]).ShouldBe(["0", "0", "1", "1"]);
        envs.Select(e => e["LOCAL_RANK"]).ShouldBe(["0", "1", "0", "1"]);
    }

    [Fact]
    public async Task KilledWorker_RestartsEveryNodesGroup_OnceForTheJob_AndTheJobFinishes()
    {
        using var scratch = new AgentScratch();
        // Rank 3 (node 1, local rank 1) dies by SIGKILL in the first attempt; the others would run for 30 s.
        string script = scratch.Script("""
            env > "$OUT/env_${TORCHELASTIC_RESTART_COUNT}_$RANK"
            if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then
              if [ "$RANK" = 3 ]; then sleep 0.3; kill -9 $$; fi
              sleep 30 & wait
            fi
            exit 0
            """);
        string endpoint = $"127.0.0.1:{AgentScratch.FreePort()}";
        string logs0 = Path.Combine(scratch.Root, "logs0");
        string logs1 = Path.Combine(scratch.Root, "logs1");
        AgentResult[] results = await Task.WhenAll(
            new ElasticAgent(Options(script, nproc: 2, nodes: 2, endpoint: endpoint, maxRestarts: 1, logDir: logs0)).RunAsync(CancellationToken.None),
            new ElasticAgent(Options(script, nproc: 2, nodes: 2, endpoint: endpoint, maxRestarts: 1, logDir: logs1)).RunAsync(CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(25));

        results.ShouldAllBe(r => r.ExitCode == 0 && r.Restarts == 1);
        for (int rank = 0; rank < 4; rank++)
        {
            scratch.ReadEnv($"env_1_{rank}")["TORCHELASTIC_RESTART_COUNT"].ShouldBe("1");
        }
        // Counted once for the job, though both nodes restarted: a budget of 1 sufficed.
        foreach (string logs in new[] { logs0, logs1 })
        {
            JsonNode state = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "agent-state.json")))!;
            state["state"]!.GetValue<string>().ShouldBe("SUCCEEDED");
            state["restarts"]!.GetValue<int>().ShouldBe(1);
        }
        JsonNode error = JsonNode.Parse(File.ReadAllText(Path.Combine(File.Exists(Path.Combine(logs0, "error.json")) ? logs0 : logs1, "error.json")))!;
        error["rank"]!.GetValue<int>().ShouldBe(3);
        error["signal"]!.GetValue<string>().ShouldBe("SIGKILL");
    }

    [Fact]
    public async Task LateNode_IsAdmittedByRestartingTheRunningGroup_WithoutCountingARestart()
    {
        using var scratch = new AgentScratch();
        // Alone (GROUP_WORLD_SIZE=1) a worker runs until stopped; in a group of two it finishes.
        string script = scratch.Script("""
            env > "$OUT/env_${GROUP_WORLD_SIZE}_$RANK"
            if [ "$GROUP_WORLD_SIZE" = 1 ]; then sleep 30 & wait; fi
            """);
        string endpoint = $"127.0.0.1:{AgentScratch.FreePort()}";
        AgentOptions elastic = Options(script, endpoint: endpoint, conf: "last_call_timeout=0.2") with { MinNodes = 1, MaxNodes = 2 };
        Task<AgentResult> first = new ElasticAgent(elastic).RunAsync(CancellationToken.None);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(scratch.Out, "env_1_0")))
        {
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10), "the first node never ran alone");
            await Task.Delay(20);
        }
        AgentResult[] results = await Task.WhenAll(first, new ElasticAgent(elastic).RunAsync(CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(20));

        results.ShouldAllBe(r => r.ExitCode == 0 && r.Restarts == 0);
        scratch.ReadEnv("env_2_0")["TORCHELASTIC_RESTART_COUNT"].ShouldBe("0");
        scratch.ReadEnv("env_2_1")["WORLD_SIZE"].ShouldBe("2");
    }

    [Fact]
    public async Task Static_TwoNodes_UseTheirNodeRanksAndTheGivenMaster()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("env > \"$OUT/env_$RANK\"");
        int masterPort = AgentScratch.FreePort();
        AgentOptions node(int rank) => Options(script, nproc: 1) with
        {
            Backend = "static",
            Standalone = false,
            MinNodes = 2,
            MaxNodes = 2,
            NodeRank = rank,
            MasterPort = masterPort,
            Endpoint = $"127.0.0.1:{AgentScratch.FreePort()}",
        };
        AgentOptions rank1 = node(1);
        AgentOptions rank0 = node(0) with { Endpoint = rank1.Endpoint };
        AgentResult[] results = await Task.WhenAll(new ElasticAgent(rank1).RunAsync(CancellationToken.None), new ElasticAgent(rank0).RunAsync(CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(20));

        results.ShouldAllBe(r => r.ExitCode == 0);
        for (int rank = 0; rank < 2; rank++)
        {
            Dictionary<string, string> env = scratch.ReadEnv($"env_{rank}");
            env["GROUP_RANK"].ShouldBe(rank.ToString(System.Globalization.CultureInfo.InvariantCulture));
            env["MASTER_ADDR"].ShouldBe("127.0.0.1");
            env["MASTER_PORT"].ShouldBe(masterPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public async Task ExhaustedRestarts_FailsWithTheCauseInTheErrorFile()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("""
            if [ "$LOCAL_RANK" = 1 ]; then echo "boom in attempt $TORCHELASTIC_RESTART_COUNT" >&2; exit 3; fi
            sleep 30 & wait
            """);
        string logs = Path.Combine(scratch.Root, "logs");
        string agentErrorFile = Path.Combine(scratch.Root, "agent-error.json");
        AgentOptions options = Options(script, nproc: 2, maxRestarts: 1, logDir: logs) with { ErrorFile = agentErrorFile };
        AgentResult result = await new ElasticAgent(options).RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));

        result.ExitCode.ShouldBe(1);
        result.State.ShouldBe("FAILED");
        result.Restarts.ShouldBe(1);
        JsonNode error = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "error.json")))!;
        error["exit_code"]!.GetValue<int>().ShouldBe(3);
        error["rank"]!.GetValue<int>().ShouldBe(1);
        error["signal"].ShouldBeNull();
        error["restart_count"]!.GetValue<int>().ShouldBe(0); // the first failure is kept
        error["stderr_tail"]!.AsArray().Select(l => l!.GetValue<string>()).ShouldContain("boom in attempt 0");
        error["job_failure"]!.GetValue<string>().ShouldContain("restart(s) are used up");
        File.ReadAllText(agentErrorFile).ShouldBe(File.ReadAllText(Path.Combine(logs, "error.json")));
        JsonNode state = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "agent-state.json")))!;
        state["state"]!.GetValue<string>().ShouldBe("FAILED");
        state["restarts"]!.GetValue<int>().ShouldBe(1);
        File.ReadAllText(Path.Combine(logs, "attempt_1", "1", "stderr.log")).ShouldContain("boom in attempt 1");
    }

    [Fact]
    public async Task Cancellation_StopsTheWorkers()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("echo $$ > \"$OUT/pid_$LOCAL_RANK\"; sleep 30 & wait");
        using var cancel = new CancellationTokenSource();
        IReadOnlyList<int> pids = [];
        var agent = new ElasticAgent(Options(script, nproc: 2)) { WorkersStarted = (_, p) => pids = p };
        Task<AgentResult> run = agent.RunAsync(cancel.Token);
        while (pids.Count == 0)
        {
            await Task.Delay(20);
        }
        await Task.Delay(200);
        await cancel.CancelAsync();
        AgentResult result = await run.WaitAsync(TimeSpan.FromSeconds(10));

        result.State.ShouldBe("STOPPED");
        result.ExitCode.ShouldBe(143);
        foreach (int pid in pids)
        {
            File.Exists($"/proc/{pid}/stat").ShouldBeFalse($"worker {pid} still runs");
        }
    }

    [Theory]
    [InlineData("4", 4, 4)]
    [InlineData("1:3", 1, 3)]
    public void ParseNodes_AcceptsNAndMinMax(string text, int min, int max) => AgentOptions.ParseNodes(text).ShouldBe((min, max));

    [Theory]
    [InlineData("0")]
    [InlineData("3:2")]
    [InlineData("a:b")]
    [InlineData("1:2:3")]
    public void ParseNodes_RefusesBadValues(string text) => Should.Throw<LaunchException>(() => AgentOptions.ParseNodes(text)).Message.ShouldContain(text);

    [Theory]
    [InlineData("host:1234", "host", 1234)]
    [InlineData("host", "host", 29400)]
    [InlineData("[::1]:5", "::1", 5)]
    public void ParseEndpoint_SplitsHostAndPort(string text, string host, int port) => AgentOptions.ParseEndpoint(text, 29400).ShouldBe((host, port));
}
