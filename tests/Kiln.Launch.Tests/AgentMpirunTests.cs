using System.Globalization;
using System.Text.Json.Nodes;
using Kiln.Launch.Agent;

namespace Kiln.Launch.Tests;

/// <summary><c>--launcher mpirun</c>: the agent's local workers as one real Open MPI world under one mpirun.</summary>
public sealed class AgentMpirunTests
{
    private static AgentOptions Options(string script, int nproc = 2, int maxRestarts = 0, string? logDir = null) => new()
    {
        Entrypoint = [script],
        ProcessesPerNode = nproc,
        Backend = "c10d",
        Standalone = true,
        RunId = "mpi-job",
        MaxRestarts = maxRestarts,
        LogDirectory = logDir,
        Launcher = AgentOptions.MpirunLauncher,
        MonitorInterval = TimeSpan.FromMilliseconds(50),
        StopGracePeriod = TimeSpan.FromSeconds(2),
        Conf = AgentOptions.ParseConf("heartbeat_timeout=2,join_timeout=20,exit_barrier_timeout=10"),
    };

    [Fact]
    public async Task TwoRanks_AreOneMpiWorld_WithTorchrunsEnvironmentPerRank()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("""
            f="$OUT/rank_$OMPI_COMM_WORLD_RANK"
            echo "RANK=$RANK" > "$f"
            echo "LOCAL_RANK=$LOCAL_RANK" >> "$f"
            echo "WORLD_SIZE=$WORLD_SIZE" >> "$f"
            echo "OMPI_COMM_WORLD_RANK=$OMPI_COMM_WORLD_RANK" >> "$f"
            echo "OMPI_COMM_WORLD_SIZE=$OMPI_COMM_WORLD_SIZE" >> "$f"
            echo "ERROR_FILE=$TORCHELASTIC_ERROR_FILE" >> "$f"
            echo "KILN_ERROR_FILE=${KILN_ERROR_FILE-unset}" >> "$f"
            echo "OMP_NUM_THREADS=$OMP_NUM_THREADS" >> "$f"
            """);
        string logs = Path.Combine(scratch.Root, "logs");
        AgentResult result = await new ElasticAgent(Options(script, logDir: logs)).RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));

        result.ExitCode.ShouldBe(0);
        result.State.ShouldBe("SUCCEEDED");
        for (int rank = 0; rank < 2; rank++)
        {
            string text = rank.ToString(CultureInfo.InvariantCulture);
            Dictionary<string, string> env = scratch.ReadEnv($"rank_{text}");
            env["OMPI_COMM_WORLD_RANK"].ShouldBe(text);
            env["OMPI_COMM_WORLD_SIZE"].ShouldBe("2");
            env["RANK"].ShouldBe(text);
            env["LOCAL_RANK"].ShouldBe(text);
            env["WORLD_SIZE"].ShouldBe("2");
            env["ERROR_FILE"].ShouldEndWith($"/attempt_0/{text}/error.json");
            env["KILN_ERROR_FILE"].ShouldBe("unset");
            env["OMP_NUM_THREADS"].ShouldBe(Environment.GetEnvironmentVariable("OMP_NUM_THREADS") ?? "1");
        }
        File.Exists(Path.Combine(logs, "attempt_0", "mpirun", "stderr.log")).ShouldBeTrue();
    }

    [Fact]
    public async Task FailingRank_EndsTheWorld_RestartsItOnce_ThenFailsWithTheRankInTheErrorFile()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("""
            echo "$$" >> "$OUT/pids"
            if [ "$RANK" = 1 ]; then
              sleep 0.2; echo "boom in attempt $TORCHELASTIC_RESTART_COUNT" >&2
              echo '{"message": "rank 1 wrote this"}' > "$TORCHELASTIC_ERROR_FILE"; exit 3
            fi
            sleep 30 & wait
            """);
        string logs = Path.Combine(scratch.Root, "logs");
        AgentResult result = await new ElasticAgent(Options(script, maxRestarts: 1, logDir: logs)).RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(40));

        result.ExitCode.ShouldBe(1);
        result.State.ShouldBe("FAILED");
        result.Restarts.ShouldBe(1);
        JsonNode error = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "error.json")))!;
        error["rank"]!.GetValue<int>().ShouldBe(1);
        error["local_rank"]!.GetValue<int>().ShouldBe(1);
        error["exit_code"]!.GetValue<int>().ShouldBe(3);
        error["restart_count"]!.GetValue<int>().ShouldBe(0);
        error["stderr_tail"]!.AsArray().Select(l => l!.GetValue<string>()).ShouldContain("boom in attempt 0");
        error["job_failure"]!.GetValue<string>().ShouldContain("restart(s) are used up");
        error["worker_error"]!["message"]!.GetValue<string>().ShouldBe("rank 1 wrote this");
        File.ReadAllText(Path.Combine(logs, "attempt_1", "mpirun", "stderr.log")).ShouldContain("boom in attempt 1");
        foreach (string pid in File.ReadAllLines(Path.Combine(scratch.Out, "pids")))
        {
            IsRunning(pid).ShouldBeFalse($"rank process {pid} still runs");
        }
    }

    [Fact]
    public async Task Cancellation_StopsMpirunAndItsRanks()
    {
        using var scratch = new AgentScratch();
        string script = scratch.Script("echo $$ > \"$OUT/pid_$RANK\"; sleep 30 & wait");
        using var cancel = new CancellationTokenSource();
        IReadOnlyList<int> pids = [];
        var agent = new ElasticAgent(Options(script)) { WorkersStarted = (_, p) => pids = p };
        Task<AgentResult> run = agent.RunAsync(cancel.Token);
        var started = System.Diagnostics.Stopwatch.StartNew();
        while (Directory.GetFiles(scratch.Out, "pid_*").Length < 2)
        {
            started.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20), "the ranks never started");
            await Task.Delay(20);
        }
        await cancel.CancelAsync();
        AgentResult result = await run.WaitAsync(TimeSpan.FromSeconds(10));

        result.State.ShouldBe("STOPPED");
        pids.ShouldHaveSingleItem(); // mpirun
        IEnumerable<string> all = Directory.GetFiles(scratch.Out, "pid_*").Select(f => File.ReadAllText(f).Trim()).Append(pids[0].ToString(CultureInfo.InvariantCulture));
        foreach (string pid in all)
        {
            IsRunning(pid).ShouldBeFalse($"process {pid} still runs");
        }
    }

    /// <summary>Whether the process runs (a zombie that its new parent has not reaped yet does not).</summary>
    private static bool IsRunning(string pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    [Theory]
    [InlineData(2, 2)]
    [InlineData(1, 3)]
    public void SeveralNodes_AreRefused_NamingTheOption(int min, int max)
    {
        AgentOptions options = Options("/bin/true") with { Standalone = false, Endpoint = "127.0.0.1:1", MinNodes = min, MaxNodes = max };
        LaunchException e = Should.Throw<LaunchException>(() => new ElasticAgent(options));
        e.Message.ShouldContain("--launcher mpirun");
        e.Message.ShouldContain("--nnodes");
    }

    [Fact]
    public void UnknownLauncher_IsRefused() =>
        Should.Throw<LaunchException>(() => new ElasticAgent(Options("/bin/true") with { Launcher = "srun" })).Message.ShouldContain("--launcher srun");

    [Fact]
    public void Arguments_AreOneAppContextPerRank_WithItsOwnEnvironment()
    {
        IReadOnlyDictionary<string, string?>[] environments =
        [
            new Dictionary<string, string?> { ["RANK"] = "0", ["KILN_ERROR_FILE"] = null, ["A"] = "x y" },
            new Dictionary<string, string?> { ["RANK"] = "1", ["KILN_ERROR_FILE"] = null, ["A"] = "x y" },
        ];
        WorkerGroup.MpirunArguments(["dotnet", "train.dll", "--steps", "3"], environments, asRoot: true).ShouldBe(
        [
            "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "--mca", "plm", "isolated", "--mca", "ras", "^slurm,gridengine,tm,lsf,simulator",
            "-np", "1", "-x", "A=x y", "-x", "RANK=0", "dotnet", "train.dll", "--steps", "3", ":",
            "-np", "1", "-x", "A=x y", "-x", "RANK=1", "dotnet", "train.dll", "--steps", "3",
        ]);
        WorkerGroup.MpirunArguments(["./w"], environments[..1], asRoot: false)[0].ShouldBe("--oversubscribe");
    }

    [Theory]
    [InlineData("  Process name: [[18907,1],1]", 1)]
    [InlineData("mpirun noticed that process rank 3 with PID 0 on node vm exited on signal 9 (Killed).", 3)]
    [InlineData("something else", -1)]
    public void FailedRank_IsReadFromMpirunsReport(string line, int rank) =>
        WorkerGroup.ParseMpirunFailedRank(["boom", line]).ShouldBe(rank);
}
