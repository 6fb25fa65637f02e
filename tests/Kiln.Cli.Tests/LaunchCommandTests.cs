using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Kiln.Cli.Tests;

/// <summary>
/// kiln run/status/log/cancel/list/describe with the local scheduler: some in this process, some as real kiln processes
/// (the launcher exits; another process asks). Each test has its own KILN_STATE_DIR, so they share one collection (the
/// variable is process-wide) and every app they start is over or cancelled when the test ends.
/// </summary>
[Collection(LaunchCollectionDefinition.Name)]
public sealed partial class LaunchCommandTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "kiln-cli-launch-" + Guid.NewGuid().ToString("N")[..10]);

    private string StateDirectory => Path.Combine(_root, "state");

    private string LocalDirectory => Path.Combine(StateDirectory, "local");

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(_root);
        Environment.SetEnvironmentVariable("KILN_STATE_DIR", StateDirectory);
        Environment.SetEnvironmentVariable("KILNCONFIG", null);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        // Nothing outlives a test: cancel whatever still runs (SIGTERM, SIGKILL after the grace), then drop the folder.
        (_, string listed, _) = await RunAsync("list", "-s", "local");
        foreach (string line in listed.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1))
        {
            string[] columns = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (columns[1] is not ("SUCCEEDED" or "FAILED" or "CANCELLED"))
            {
                await RunAsync("cancel", columns[0]);
            }
        }
        Environment.SetEnvironmentVariable("KILN_STATE_DIR", null);
        Environment.SetEnvironmentVariable("KILNCONFIG", null);
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task Run_ThenStatusAndLogFromAnotherProcess_AfterTheLauncherExited()
    {
        (int code, string output, string error) = await RunProcessAsync("run", "-cfg", "cancel_grace=1", "utils.echo", "--msg", "hello from kiln");

        code.ShouldBe(0, error);
        string handle = output.Trim();
        handle.ShouldStartWith("local://kiln/echo-");
        string status = await WaitForStateAsync(handle, "SUCCEEDED");
        status.ShouldContain("restarts: 0");
        status.ShouldContain("echo[0]: SUCCEEDED exit 0 on localhost");
        (int logCode, string log, _) = await RunProcessAsync("log", handle);
        logCode.ShouldBe(0);
        log.ShouldBe("echo/0 hello from kiln\n");
        (_, string listed, _) = await RunProcessAsync("list", "-s", "local");
        listed.ShouldContain(handle);
        listed.ShouldContain("SUCCEEDED");
    }

    [Fact]
    public async Task DistDdp_OneWorkerOfFourKilled_RestartsTheGroup_FinishesAndStatusCountsTheRestart()
    {
        string script = WorkerScript("""
            if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$RANK" = 2 ]; then sleep 0.3; echo "rank 2 dies" >&2; kill -9 $$; fi
            if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then sleep 30 & wait; fi
            echo "rank $RANK of $WORLD_SIZE, restart $TORCHELASTIC_RESTART_COUNT"
            """);
        (int code, string output, string error) = await RunProcessAsync("run", "dist.ddp", "-j", "1x4", "--max-restarts", "2", "--entrypoint", script);
        code.ShouldBe(0, error);
        string status = await WaitForStateAsync(output.Trim(), "SUCCEEDED");
        status.ShouldContain("restarts: 1");
    }

    [Fact]
    public async Task DistDdp_RestartsExhausted_FailsWithTheCauseFromTheErrorFile()
    {
        string script = WorkerScript("""
            if [ "$RANK" = 1 ]; then sleep 0.2; echo "rank 1 gives up" >&2; exit 3; fi
            sleep 30 & wait
            """);
        (int code, string output, string error) = await RunProcessAsync("run", "dist.ddp", "-j", "1x2", "--max-restarts", "1", "--entrypoint", script);
        code.ShouldBe(0, error);
        string status = await WaitForStateAsync(output.Trim(), "FAILED");
        status.ShouldContain("restarts: 1");
        status.ShouldContain("rank 1 gives up");
        status.ShouldContain("error file");
    }

    private string WorkerScript(string body)
    {
        Directory.CreateDirectory(_root);
        string path = Path.Combine(_root, $"worker-{Guid.NewGuid():N}.sh");
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    [Fact]
    public async Task Cancel_FromAnotherProcess_EndsTheAppCancelled_AndItsProcessesAreGone()
    {
        (int code, string output, string error) = await RunProcessAsync("run", "-cfg", "cancel_grace=2", "utils.sh", "--", "sleep 30 & sleep 30; wait");
        code.ShouldBe(0, error);
        string handle = output.Trim();
        await WaitForStateAsync(handle, "RUNNING");
        string appDirectory = Path.Combine(LocalDirectory, handle[(handle.LastIndexOf('/') + 1)..]);
        int pid = await ReplicaPidAsync(appDirectory);
        int supervisor = JsonDocument.Parse(File.ReadAllText(Path.Combine(appDirectory, "supervisor.json"))).RootElement.GetProperty("pid").GetInt32();
        Alive(pid).ShouldBeTrue();

        (int cancelCode, string cancelled, string cancelError) = await RunProcessAsync("cancel", handle);

        cancelCode.ShouldBe(0, cancelError);
        cancelled.Trim().ShouldBe($"{handle} CANCELLED");
        (await RunProcessAsync("status", handle)).Output.ShouldContain("state: CANCELLED");
        Alive(pid).ShouldBeFalse();
        (await EventuallyAsync(() => !Alive(supervisor))).ShouldBeTrue("the supervisor ends with its app");
    }

    [Theory]
    [InlineData("detached", "RUNNING")]
    [InlineData("inline", "CANCELLED")]
    public async Task RunWait_CtrlC_StopsWaiting_TheAppGoesOnOnlyWhenDetached(string supervise, string stateAfter)
    {
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "kiln"))
        {
            ArgumentList = { "run", "--wait", "-cfg", $"supervise={supervise},cancel_grace=2", "utils.sh", "--", "exec sleep 30" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            Environment = { ["KILN_STATE_DIR"] = StateDirectory },
        };
        using Process kiln = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Task<string> errors = kiln.StandardError.ReadToEndAsync(timeout.Token);
        string handle;
        try
        {
            handle = (await kiln.StandardOutput.ReadLineAsync(timeout.Token)).ShouldNotBeNull();
            await WaitForStateAsync(handle, "RUNNING");
            Kill(kiln.Id, 2).ShouldBe(0);
            await kiln.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!kiln.HasExited)
            {
                kiln.Kill();
            }
        }

        kiln.ExitCode.ShouldBe(130);
        (await errors).ShouldContain(supervise == "inline" ? "is cancelled (supervise=inline)" : "goes on (kiln cancel");
        (await RunProcessAsync("status", handle)).Output.ShouldContain($"state: {stateAfter}");
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    [Fact]
    public async Task RunWait_ExitCodeFollowsTheApp_AndStateChangesGoToStderr()
    {
        (int ok, string okOut, string okError) = await RunAsync("run", "--wait", "utils.sh", "--", "echo fine");
        ok.ShouldBe(0, okError);
        okError.ShouldContain("SUCCEEDED");
        okOut.ShouldStartWith("local://kiln/sh-");

        (int failed, string failedOut, string failedError) = await RunAsync("run", "--wait", "-cfg", "supervise=inline", "utils.sh", "--", "echo bad >&2; exit 3");
        failed.ShouldBe(1);
        failedError.ShouldContain($"{failedOut.Trim()} FAILED");
        failedError.ShouldContain("sh[0] exited with code 3");
        (int statusCode, string status, _) = await RunAsync("status", failedOut.Trim());
        statusCode.ShouldBe(0);
        status.ShouldContain("error: sh[0] exited with code 3; last stderr lines:");
        status.ShouldContain("bad");
    }

    [Fact]
    public async Task RunLog_FollowsEveryReplica_AndLogFiltersByRegexStreamAndSince()
    {
        (int code, string output, string error) = await RunAsync("run", "--log", "utils.sh", "--", "echo one; echo two >&2; echo three");

        code.ShouldBe(0, error);
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string handle = lines[0];
        lines.Skip(1).ShouldBe(["sh/0 one", "sh/0 two", "sh/0 three"], ignoreOrder: true);
        // stdout and stderr are two pipes: their lines keep their order within a stream only.
        (await RunAsync("log", handle, "--regex", "^t")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).ShouldBe(["sh/0 two", "sh/0 three"], ignoreOrder: true);
        (await RunAsync("log", handle + "/sh/0", "--streams", "stderr")).Output.ShouldBe("sh/0 two\n");
        (await RunAsync("log", handle + "/sh", "--since", "1h")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length.ShouldBe(3);
        (await RunAsync("log", handle, "--until", "2000-01-01T00:00:00Z")).Output.ShouldBeEmpty();
        (await RunAsync("log", handle, "-t")).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length.ShouldBe(3);
        (int describeCode, string described, _) = await RunAsync("describe", handle);
        describeCode.ShouldBe(0);
        described.ShouldContain("entrypoint: /bin/sh");
        described.ShouldContain("state: SUCCEEDED");
    }

    [Fact]
    public async Task RunLog_ComponentFileOfTwoRolesAndFiveReplicas_FollowsThemAll()
    {
        string component = Path.Combine(_root, "pair.json");
        File.WriteAllText(component, """
            {
              "name": "pair",
              "roles": [
                {"name": "a", "entrypoint": "/bin/sh", "args": ["-c", "echo a$KILN_REPLICA_ID; sleep 0.2; echo a$KILN_REPLICA_ID done"], "num_replicas": 2},
                {"name": "b", "entrypoint": "/bin/sh", "args": ["-c", "echo b${replica_id} >&2"], "num_replicas": 3}
              ]
            }
            """);

        (int code, string output, string error) = await RunAsync("run", "--log", component);

        code.ShouldBe(0, error);
        string[] lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string handle = lines[0];
        lines.Skip(1).ShouldBe(["a/0 a0", "a/0 a0 done", "a/1 a1", "a/1 a1 done", "b/0 b0", "b/1 b1", "b/2 b2"], ignoreOrder: true);
        string status = (await RunProcessAsync("status", handle)).Output;
        status.ShouldContain("state: SUCCEEDED");
        foreach (string replica in new[] { "a[0]", "a[1]", "b[0]", "b[1]", "b[2]" })
        {
            status.ShouldContain($"{replica}: SUCCEEDED exit 0");
        }
        (await RunAsync("log", handle + "/b")).Output.ShouldBe("b/0 b0\nb/1 b1\nb/2 b2\n");
        (await RunAsync("log", handle + "/a/1", "--regex", "done")).Output.ShouldBe("a/1 a1 done\n");
    }

    [Fact]
    public async Task DryRun_PrintsTheRequest_AndStartsNothing()
    {
        (int code, string output, string error) = await RunAsync("run", "--dryrun", "utils.echo", "--msg", "hi");

        code.ShouldBe(0, error);
        output.ShouldContain("=== APPLICATION ===");
        output.ShouldContain("=== SCHEDULER REQUEST (local) ===");
        output.ShouldContain("/bin/echo hi");
        Directory.Exists(StateDirectory).ShouldBeFalse();
    }

    [Theory]
    [InlineData("unknown component", "run", "no.such.component")]
    [InlineData("unknown scheduler \"nosuch\"", "run", "-s", "nosuch", "utils.echo")]
    [InlineData("is not KEY=VALUE", "run", "--scheduler-args", "garbage", "utils.echo")]
    [InlineData("unknown run option \"colour\"", "run", "-cfg", "colour=blue", "utils.echo")]
    [InlineData("option -j is [MIN:]NxM", "run", "dist.ddp", "-j", "bad", "--script", "train.sh")]
    [InlineData("is not an executable file", "run", "utils.binary", "--entrypoint", "/no/such/program")]
    [InlineData("supervise=inline needs --wait", "run", "-cfg", "supervise=inline", "utils.echo")]
    [InlineData("no component", "run", "--wait")]
    [InlineData("is not an app handle", "status", "not-a-handle")]
    [InlineData("local knows no app nope-123", "status", "local://kiln/nope-123")]
    [InlineData("unknown scheduler \"nosuch\"", "describe", "nosuch://x/y")]
    [InlineData("no app nope-123", "cancel", "local://kiln/nope-123")]
    [InlineData("is not an app handle with an optional role and replica", "log", "local:/x")]
    [InlineData("local knows no app nope-1", "log", "local://kiln/nope-1/r/0")]
    [InlineData("unknown scheduler \"nosuch\"", "list", "-s", "nosuch")]
    [InlineData("unknown scheduler \"nosuch\"", "runopts", "nosuch")]
    public async Task BadInput_OneLineNamingTheProblem_ExitCode2_NothingSubmitted(string message, params string[] args)
    {
        (int code, string output, string error) = await RunAsync(args);

        code.ShouldBe(2, output + error);
        error.ShouldContain(message);
        error.TrimEnd('\n').ShouldNotContain('\n');
        Directory.Exists(LocalDirectory).ShouldBeFalse();
    }

    [Fact]
    public async Task Log_BadQueries_ExitCode2()
    {
        (int code, string output, _) = await RunAsync("run", "--wait", "utils.echo", "--msg", "x");
        code.ShouldBe(0);
        string handle = output.Trim();
        (await RunAsync("log", handle + "/nope")).Code.ShouldBe(2);
        (await RunAsync("log", handle + "/echo/7")).Code.ShouldBe(2);
        (await RunAsync("log", handle, "--regex", "(")).Error.ShouldContain("not a regular expression");
        (await RunAsync("log", handle, "--since", "yesterday")).Error.ShouldContain("--since yesterday is neither a time");
    }

    [Fact]
    public async Task KilnConfig_DefaultSchedulerAndRunOptions_CliWins()
    {
        string config = Path.Combine(_root, "kilnconfig");
        File.WriteAllText(config, "[cli:run]\nscheduler = nosuch\n[local]\ncancel_grace = 7\nunrelated = 1\n");
        Environment.SetEnvironmentVariable("KILNCONFIG", config);

        (await RunAsync("run", "--dryrun", "utils.echo")).Error.ShouldContain("unknown scheduler \"nosuch\"");
        (int code, string output, string error) = await RunAsync("run", "-s", "local", "--dryrun", "utils.echo");
        code.ShouldBe(0, error);
        output.ShouldContain("SIGKILL after 7 s");
        (await RunAsync("run", "-s", "local", "-cfg", "cancel_grace=3", "--dryrun", "utils.echo")).Output.ShouldContain("SIGKILL after 3 s");

        File.WriteAllText(config, "not ini\n");
        (int bad, _, string badError) = await RunAsync("run", "--dryrun", "utils.echo");
        bad.ShouldBe(2);
        badError.ShouldContain("is neither a [section] nor key = value");
    }

    [Fact]
    public async Task Builtins_AndRunopts_ListWhatIsThere()
    {
        (int code, string output, _) = await RunAsync("builtins");
        code.ShouldBe(0);
        output.ShouldContain("utils.echo");
        output.ShouldContain("dist.ddp");
        (int optsCode, string opts, _) = await RunAsync("runopts", "local");
        optsCode.ShouldBe(0);
        opts.ShouldContain("cancel_grace (default: 10)");
        opts.ShouldContain("supervise (default: detached)");
    }

    private async Task<string> WaitForStateAsync(string handle, string state)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        string last = "";
        while (!timeout.IsCancellationRequested)
        {
            (int code, string output, string error) = await RunAsync("status", handle);
            code.ShouldBe(0, error);
            last = output;
            if (output.Contains($"state: {state}", StringComparison.Ordinal))
            {
                // Asked once more from a process of its own, as a user in another shell would.
                (int processCode, string fromProcess, _) = await RunProcessAsync("status", handle);
                processCode.ShouldBe(0);
                fromProcess.ShouldContain($"state: {state}");
                return fromProcess;
            }
            await Task.Delay(50);
        }
        throw new TimeoutException($"{handle} did not reach {state}; last status:\n{last}");
    }

    private static async Task<int> ReplicaPidAsync(string appDirectory)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (true)
        {
            string path = Path.Combine(appDirectory, "state.json");
            if (File.Exists(path)
                && JsonDocument.Parse(File.ReadAllText(path)).RootElement.GetProperty("roles")[0].GetProperty("replicas")[0].TryGetProperty("process", out JsonElement process))
            {
                return process.GetProperty("pid").GetInt32();
            }
            await Task.Delay(25, timeout.Token);
        }
    }

    /// <summary>True while the process runs (a zombie counts as gone).</summary>
    private static bool Alive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..][0] is not ('Z' or 'X');
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static async Task<bool> EventuallyAsync(Func<bool> condition)
    {
        for (int i = 0; i < 250 && !condition(); i++)
        {
            await Task.Delay(20);
        }
        return condition();
    }

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        int code = await KilnCommandLine.InvokeAsync(args, output, error, timeout.Token);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>Runs the real kiln executable with this test's state folder.</summary>
    private async Task<(int Code, string Output, string Error)> RunProcessAsync(params string[] args)
    {
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "kiln"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            Environment = { ["KILN_STATE_DIR"] = StateDirectory },
        };
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using Process kiln = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Task<string> output = kiln.StandardOutput.ReadToEndAsync(timeout.Token);
        Task<string> error = kiln.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await kiln.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!kiln.HasExited)
            {
                kiln.Kill();
            }
        }
        return (kiln.ExitCode, await output, await error);
    }
}

[CollectionDefinition(Name)]
public sealed class LaunchCollectionDefinition
{
    public const string Name = "launch (KILN_STATE_DIR is process-wide)";
}
