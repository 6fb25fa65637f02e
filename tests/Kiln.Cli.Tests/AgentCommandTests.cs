using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace Kiln.Cli.Tests;

/// <summary>Real <c>kiln agent</c> processes: a killed worker, vanished nodes, SIGTERM, bad flags.</summary>
public sealed partial class AgentCommandTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("kiln-agent-cli-").FullName;
    private readonly List<int> _pids = [];

    private string Out => Directory.CreateDirectory(Path.Combine(_root, "out")).FullName;

    [Fact]
    public async Task Agent_OneWorkerOfFourKilled_RestartsTheGroupOnce_AndSucceeds()
    {
        string script = Script("""
            echo "$TORCHELASTIC_RESTART_COUNT" > "$OUT/restart_$RANK"
            if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then
              if [ "$RANK" = 2 ]; then sleep 0.3; echo "rank 2 dies" >&2; kill -9 $$; fi
              sleep 30 & wait
            fi
            """);
        string logs = Path.Combine(_root, "logs");
        using Process agent = StartAgent("--standalone", "--nproc-per-node", "4", "--max-restarts", "1", "--monitor-interval", "0.05", "--log-dir", logs, "--", script);
        (int code, string stdout, string stderr) = await FinishAsync(agent, TimeSpan.FromSeconds(30));

        code.ShouldBe(0, stderr);
        stdout.TrimEnd().Split('\n')[^1].ShouldBe("agent: state=SUCCEEDED restarts=1 exit=0");
        for (int rank = 0; rank < 4; rank++)
        {
            File.ReadAllText(Path.Combine(Out, $"restart_{rank}")).Trim().ShouldBe("1");
        }
        JsonNode state = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "agent-state.json")))!;
        state["state"]!.GetValue<string>().ShouldBe("SUCCEEDED");
        state["restarts"]!.GetValue<int>().ShouldBe(1);
        JsonNode error = JsonNode.Parse(File.ReadAllText(Path.Combine(logs, "error.json")))!;
        error["rank"]!.GetValue<int>().ShouldBe(2);
        error["signal"]!.GetValue<string>().ShouldBe("SIGKILL");
        error["stderr_tail"]!.AsArray().Select(l => l!.GetValue<string>()).ShouldContain("rank 2 dies");
    }

    [Theory]
    [InlineData("1:2", 0)]
    [InlineData("2:2", 1)]
    public async Task Agent_NodeVanishes_IsNoticedWithinTheHeartbeatTimeout(string nnodes, int expectedExitCode)
    {
        string script = Script("""
            echo "$PPID" > "$OUT/worker_$$"
            if [ "$GROUP_WORLD_SIZE" = 2 ]; then sleep 30 & echo "$!" > "$OUT/sleep_$$"; wait; fi
            """);
        string endpoint = $"127.0.0.1:{FreePort()}";
        string[] common = ["--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "vanish", "--monitor-interval", "0.05", "--stop-grace-period", "1"];
        using Process host = StartAgent([.. common, "--rdzv-conf", "is_host=true,heartbeat_timeout=1,last_call_timeout=30", "--", script]);
        using Process other = StartAgent([.. common, "--rdzv-conf", "is_host=false,heartbeat_timeout=1,last_call_timeout=30", "--", script]);
        Task<string> hostErrors = host.StandardError.ReadToEndAsync();
        Task<string> hostOutput = host.StandardOutput.ReadToEndAsync();

        var clock = Stopwatch.StartNew();
        while (Directory.GetFiles(Out, "worker_*").Length < 2)
        {
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20), "the two nodes never started their workers");
            await Task.Delay(50);
        }
        other.Kill(); // SIGKILL: the node vanishes without a word
        foreach (string file in Directory.GetFiles(Out, "worker_*"))
        {
            if (File.ReadAllText(file).Trim() == other.Id.ToString(CultureInfo.InvariantCulture))
            {
                string worker = Path.GetFileName(file)["worker_".Length..];
                KillPid(int.Parse(worker, CultureInfo.InvariantCulture));
                string sleep = Path.Combine(Out, $"sleep_{worker}");
                if (File.Exists(sleep))
                {
                    KillPid(int.Parse(File.ReadAllText(sleep).Trim(), CultureInfo.InvariantCulture));
                }
            }
        }
        var sinceKill = Stopwatch.StartNew();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await host.WaitForExitAsync(timeout.Token);
        sinceKill.Stop();

        string errors = await hostErrors;
        host.ExitCode.ShouldBe(expectedExitCode, errors);
        errors.ShouldContain("sent no heartbeat");
        // Heartbeat timeout 1 s, then a new round (or the failure): well under the 15 s bound.
        sinceKill.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(6));
        if (expectedExitCode == 1)
        {
            errors.ShouldContain("fewer than --nnodes MIN 2");
            (await hostOutput).ShouldContain("agent: state=FAILED");
        }
        else
        {
            (await hostOutput).ShouldContain("agent: state=SUCCEEDED restarts=0");
        }
    }

    [Fact]
    public async Task Agent_EndpointNamingTheRank0HostVariable_IsExpandedFromTheEnvironment()
    {
        // What dist.ddp passes on several nodes: no shell runs between the scheduler and the agent.
        string script = Script("""echo "$RANK $WORLD_SIZE" > "$OUT/rank_$RANK" """);
        string endpoint = "${KILN_RANK0_HOST}:" + FreePort().ToString(CultureInfo.InvariantCulture);
        var env = new Dictionary<string, string> { ["KILN_RANK0_HOST"] = "127.0.0.1" };
        string[] common = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "expand", "--monitor-interval", "0.05"];
        using Process first = StartAgent(env, [.. common, "--node-rank", "0", "--", script]);
        using Process second = StartAgent(env, [.. common, "--node-rank", "1", "--", script]);
        (int code0, _, string stderr0) = await FinishAsync(first, TimeSpan.FromSeconds(30));
        (int code1, _, string stderr1) = await FinishAsync(second, TimeSpan.FromSeconds(30));
        code0.ShouldBe(0, stderr0);
        code1.ShouldBe(0, stderr1);
        File.ReadAllText(Path.Combine(Out, "rank_0")).Trim().ShouldBe("0 2");
        File.ReadAllText(Path.Combine(Out, "rank_1")).Trim().ShouldBe("1 2");
    }

    [Fact]
    public async Task Agent_EndpointNamingAnUnsetVariable_IsAOneLineErrorWithExitCode2()
    {
        var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(
            ["agent", "--nnodes", "2", "--rdzv-endpoint", "${KILN_TEST_UNSET_HOST_VARIABLE}:29500", "--", "/bin/true"], new StringWriter(), error, CancellationToken.None);
        code.ShouldBe(2);
        error.ToString().ShouldContain("KILN_TEST_UNSET_HOST_VARIABLE is not set");
    }

    [Fact]
    public async Task Agent_Sigterm_StopsTheWorkersAndExits143()
    {
        string script = Script("""
            env > "$OUT/env_$LOCAL_RANK"
            trap 'echo "$LOCAL_RANK" > "$OUT/term_$LOCAL_RANK"; exit 0' TERM
            echo $$ > "$OUT/pid_$LOCAL_RANK"
            sleep 30 & wait
            """);
        string replica = Path.Combine(_root, "replica");
        // As Kiln's local scheduler starts a replica: KILN_ERROR_FILE, no --log-dir.
        using Process agent = StartAgent(new Dictionary<string, string> { ["KILN_ERROR_FILE"] = Path.Combine(replica, "error.json") }, "--standalone", "--nproc-per-node", "2", "--", script);
        var clock = Stopwatch.StartNew();
        while (Directory.GetFiles(Out, "pid_*").Length < 2)
        {
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(20));
            await Task.Delay(50);
        }
        int[] workers = [.. Directory.GetFiles(Out, "pid_*").Select(f => int.Parse(File.ReadAllText(f).Trim(), CultureInfo.InvariantCulture))];
        _pids.AddRange(workers);
        Kill(agent.Id, 15).ShouldBe(0);
        (int code, _, string stderr) = await FinishAsync(agent, TimeSpan.FromSeconds(15));

        code.ShouldBe(143, stderr);
        foreach (int pid in workers)
        {
            File.Exists($"/proc/{pid}/stat").ShouldBeFalse($"worker {pid} survived the agent");
        }
        JsonNode state = JsonNode.Parse(File.ReadAllText(Path.Combine(replica, "agent-state.json")))!;
        state["state"]!.GetValue<string>().ShouldBe("STOPPED");
        File.ReadAllText(Path.Combine(Out, "env_0")).ShouldNotContain("KILN_ERROR_FILE=");
        // The workers got SIGTERM first (time to checkpoint), not an outright SIGKILL.
        File.Exists(Path.Combine(Out, "term_0")).ShouldBeTrue();
        File.Exists(Path.Combine(Out, "term_1")).ShouldBeTrue();
    }

    [Theory]
    [InlineData("--nnodes", "2:1")]
    [InlineData("--rdzv-backend", "zookeeper")]
    [InlineData("--nproc-per-node", "many")]
    public async Task Agent_BadFlags_AreAOneLineErrorWithExitCode2(string flag, string value)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        string[] args = flag == "--rdzv-backend"
            ? ["agent", flag, value, "--rdzv-endpoint", "127.0.0.1:1", "--", "/bin/true"]
            : ["agent", flag, value, "--", "/bin/true"];
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);

        code.ShouldBe(2);
        error.ToString().ShouldContain(value);
        error.ToString().Trim().Split('\n').Length.ShouldBe(1);
    }

    [Fact]
    public async Task Agent_LauncherMpirunOnTwoNodes_IsRefusedWithExitCode2()
    {
        var error = new StringWriter();
        string[] args = ["agent", "--nnodes", "2", "--launcher", "mpirun", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:1", "--", "/bin/true"];
        (await KilnCommandLine.InvokeAsync(args, new StringWriter(), error, CancellationToken.None)).ShouldBe(2);
        error.ToString().ShouldContain("--launcher mpirun runs the workers of one node only (--nnodes 1), not --nnodes 2");
    }

    [Fact]
    public async Task Agent_WithoutAnEntrypoint_ExitsWith2()
    {
        var error = new StringWriter();
        (await KilnCommandLine.InvokeAsync(["agent", "--standalone"], new StringWriter(), error, CancellationToken.None)).ShouldBe(2);
        error.ToString().ShouldContain("entrypoint");
    }

    public void Dispose()
    {
        foreach (int pid in _pids)
        {
            KillPid(pid);
        }
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private string Script(string body)
    {
        string path = Path.Combine(_root, "worker.sh");
        File.WriteAllText(path, $"#!/bin/sh\nOUT='{Out}'\n{body}\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    private Process StartAgent(params string[] args) => StartAgent(new Dictionary<string, string>(), args);

    private Process StartAgent(Dictionary<string, string> env, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kiln.dll"));
        start.ArgumentList.Add("agent");
        foreach ((string name, string value) in env)
        {
            start.Environment[name] = value;
        }
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        Process process = Process.Start(start)!;
        _pids.Add(process.Id);
        return process;
    }

    private static async Task<(int Code, string Stdout, string Stderr)> FinishAsync(Process process, TimeSpan limit)
    {
        using var timeout = new CancellationTokenSource(limit);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        Task<string> stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, await stdout, await stderr);
    }

    private static void KillPid(int pid)
    {
        if (File.Exists($"/proc/{pid}/stat"))
        {
            _ = Kill(pid, 9);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);
}
