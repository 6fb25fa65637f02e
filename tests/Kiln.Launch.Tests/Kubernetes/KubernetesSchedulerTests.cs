using System.Text.Json.Nodes;
using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Kubernetes;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests.Kubernetes;

/// <summary>The kubernetes scheduler's client paths against <see cref="FakeApiServer"/> (no real cluster).</summary>
public sealed class KubernetesSchedulerTests : IAsyncLifetime
{
    private FakeApiServer _server = null!;
    private KubernetesScheduler _sut = null!;
    private string _emptyHome = null!;

    public async Task InitializeAsync()
    {
        _server = await FakeApiServer.StartAsync();
        _emptyHome = Path.Combine(Path.GetTempPath(), "kiln-home-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_emptyHome);
        _sut = new KubernetesScheduler(new KubernetesSchedulerSettings
        {
            Kubeconfig = _server.Kubeconfig,
            Locator = new KubeconfigLocator(_ => null, _emptyHome),
        });
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        Directory.Delete(_emptyHome, recursive: true);
    }

    private static AppDef App(int workers = 2) => new()
    {
        Name = "ddp",
        Roles =
        [
            new Role { Name = "ps", Entrypoint = "server", Image = "img:ps" },
            new Role { Name = "worker", Entrypoint = "train", Image = "img:w", NumReplicas = workers, MaxRetries = 1 },
        ],
    };

    private async Task<(AppHandle Handle, string Name)> SubmitAsync(AppDef? app = null)
    {
        DryRunInfo info = _sut.SubmitDryRun(app ?? App(), new Dictionary<string, string> { ["kubeconfig"] = _server.Kubeconfig });
        AppHandle handle = await _sut.SubmitAsync(info, default);
        return (handle, handle.AppId.Split(':')[1]);
    }

    [Fact]
    public async Task Submit_CreatesTheJobsThenTheServiceOwnedByTheFirstJob()
    {
        (AppHandle handle, string name) = await SubmitAsync();

        handle.Scheduler.ShouldBe("kubernetes");
        handle.Session.ShouldBe("kiln");
        handle.AppId.ShouldBe($"default:{name}");
        _server.Requests.Where(r => r.StartsWith("POST", StringComparison.Ordinal)).ShouldBe(
        [
            "POST /apis/batch/v1/namespaces/default/jobs",
            "POST /apis/batch/v1/namespaces/default/jobs",
            "POST /api/v1/namespaces/default/services",
        ]);
        JsonObject ps = _server.Jobs[$"default/{name}-ps"];
        JsonObject worker = _server.Jobs[$"default/{name}-worker"];
        ((int)worker["spec"]!["completions"]!).ShouldBe(2);
        ((int)worker["spec"]!["backoffLimit"]!).ShouldBe(1);
        ((string)worker["spec"]!["completionMode"]!).ShouldBe("Indexed");
        JsonNode owner = _server.Services[$"default/{name}"]["metadata"]!["ownerReferences"]![0]!;
        ((string)owner["kind"]!).ShouldBe("Job");
        ((string)owner["name"]!).ShouldBe($"{name}-ps");
        ((string)owner["uid"]!).ShouldBe((string)ps["metadata"]!["uid"]!);
    }

    [Fact]
    public async Task Submit_ServiceRefused_TakesBackTheJobsAndThrowsLaunchException()
    {
        _server.RefuseServices = "services is forbidden: quota exceeded";
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => SubmitAsync());
        ex.Message.ShouldContain("quota exceeded");
        ex.Message.ShouldContain("403");
        _server.Jobs.ShouldBeEmpty();
        _server.Requests.Count(r => r.StartsWith("DELETE /apis/batch/v1/namespaces/default/jobs/", StringComparison.Ordinal)).ShouldBe(2);
    }

    [Fact]
    public async Task Submit_NoKubeconfigAnywhere_ThrowsLaunchExceptionNamingIt()
    {
        var sut = new KubernetesScheduler(new KubernetesSchedulerSettings { Locator = new KubeconfigLocator(_ => null, _emptyHome) });
        DryRunInfo info = sut.SubmitDryRun(App(), new Dictionary<string, string>());
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => sut.SubmitAsync(info, default));
        ex.Message.ShouldContain("kubeconfig");
        ex.Message.ShouldContain("KUBECONFIG");
        ex.Message.ShouldContain(Path.Combine(_emptyHome, ".kube", "config"));
        _server.Requests.ShouldBeEmpty();
    }

    [Fact]
    public async Task Submit_KubeconfigOptionMissingFile_ThrowsLaunchExceptionNamingThePath()
    {
        DryRunInfo info = _sut.SubmitDryRun(App(), new Dictionary<string, string> { ["kubeconfig"] = "/nonexistent/kubeconfig" });
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => _sut.SubmitAsync(info, default));
        ex.Message.ShouldContain("/nonexistent/kubeconfig");
    }

    [Fact]
    public async Task Submit_KubeconfigFromTheEnvironment_IsUsed()
    {
        var sut = new KubernetesScheduler(new KubernetesSchedulerSettings
        {
            Locator = new KubeconfigLocator(v => v == "KUBECONFIG" ? $"/nonexistent:{_server.Kubeconfig}" : null, _emptyHome),
        });
        AppHandle handle = await sut.SubmitAsync(sut.SubmitDryRun(App(), new Dictionary<string, string>()), default);
        (await sut.DescribeAsync(handle.AppId, default)).ShouldNotBeNull();
    }

    [Fact]
    public async Task Describe_UnknownApp_ReturnsNull()
    {
        (await _sut.DescribeAsync("default:nothing-here", default)).ShouldBeNull();
    }

    [Fact]
    public async Task Describe_JustCreated_IsPending()
    {
        (AppHandle handle, _) = await SubmitAsync();
        AppStatus status = (await _sut.DescribeAsync(handle.AppId, default)).ShouldNotBeNull();
        status.State.ShouldBe(AppState.Pending);
        status.Roles.Select(r => r.Role).ShouldBe(["ps", "worker"]);
    }

    [Fact]
    public async Task Describe_PodsRunning_IsRunningWithReplicasAndHostnames()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        _server.SetJobStatus("default", $"{name}-ps", new JsonObject { ["active"] = 1, ["ready"] = 1 });
        _server.SetJobStatus("default", $"{name}-worker", new JsonObject { ["active"] = 2 });
        _server.AddPod("default", $"{name}-ps", 0, "Running");
        _server.AddPod("default", $"{name}-worker", 1, "Running");
        _server.AddPod("default", $"{name}-worker", 0, "Pending");

        AppStatus status = (await _sut.DescribeAsync(handle.AppId, default)).ShouldNotBeNull();

        status.State.ShouldBe(AppState.Running);
        RoleStatus workers = status.Roles.Single(r => r.Role == "worker");
        workers.Replicas.Select(r => (r.Id, r.State)).ShouldBe([(0, AppState.Pending), (1, AppState.Running)]);
        workers.Replicas[1].Hostname.ShouldBe($"{name}-worker-1.{name}");
    }

    [Fact]
    public async Task Describe_AllJobsComplete_IsSucceeded()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        foreach (string role in new[] { "ps", "worker" })
        {
            _server.SetJobStatus("default", $"{name}-{role}", Condition("Complete", "Reached expected number of succeeded pods"));
        }
        _server.AddPod("default", $"{name}-ps", 0, "Succeeded", exitCode: 0);
        AppStatus status = (await _sut.DescribeAsync(handle.AppId, default)).ShouldNotBeNull();
        status.State.ShouldBe(AppState.Succeeded);
        status.Roles[0].Replicas.ShouldHaveSingleItem().ExitCode.ShouldBe(0);
    }

    [Fact]
    public async Task Describe_AJobFailed_IsFailedWithTheFirstErrorAndRestarts()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        JsonObject failed = Condition("Failed", "Job has reached the specified backoff limit");
        failed["failed"] = 2;
        _server.SetJobStatus("default", $"{name}-worker", failed);
        _server.SetJobStatus("default", $"{name}-ps", new JsonObject { ["active"] = 1 });
        DateTimeOffset now = DateTimeOffset.UtcNow;
        _server.AddPod("default", $"{name}-worker", 1, "Failed", exitCode: 3, created: now.AddMinutes(-2), suffix: "old01");
        _server.AddPod("default", $"{name}-worker", 1, "Failed", exitCode: 137, created: now, suffix: "new01");

        AppStatus status = (await _sut.DescribeAsync(handle.AppId, default)).ShouldNotBeNull();

        status.State.ShouldBe(AppState.Failed);
        status.NumRestarts.ShouldBe(2);
        status.Message.ShouldContain("backoff limit");
        status.StructuredError.ShouldNotBeNull();
        status.StructuredError.ShouldContain("replica 1");
        status.StructuredError.ShouldContain("code 137");
        status.Roles.Single(r => r.Role == "worker").Replicas.ShouldHaveSingleItem().ExitCode.ShouldBe(137);
    }

    [Fact]
    public async Task Log_OneReplica_ReturnsItsLinesFilteredByRegex()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        _server.AddPod("default", $"{name}-worker", 0, "Running");
        _server.AddPod("default", $"{name}-worker", 1, "Running");
        DateTimeOffset now = DateTimeOffset.UtcNow;
        _server.Logs[$"{name}-worker-0-abcde"] = [(now, "w0 step 1"), (now, "w0 loss 0.5")];
        _server.Logs[$"{name}-worker-1-abcde"] = [(now, "w1 step 1"), (now, "w1 loss 0.4")];

        (await Collect(_sut.LogAsync(handle.AppId, "worker", 1, new LogQuery(), default))).ShouldBe(["w1 step 1", "w1 loss 0.4"]);
        (await Collect(_sut.LogAsync(handle.AppId, "worker", null, new LogQuery { Regex = "loss" }, default))).ShouldBe(["w0 loss 0.5", "w1 loss 0.4"]);
    }

    [Fact]
    public async Task Log_SinceAndUntil_UseTheServersTimestamps()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        _server.AddPod("default", $"{name}-ps", 0, "Running");
        DateTimeOffset now = DateTimeOffset.UtcNow;
        _server.Logs[$"{name}-ps-0-abcde"] = [(now.AddMinutes(-10), "old"), (now.AddMinutes(-5), "middle"), (now.AddMinutes(-1), "recent")];

        var query = new LogQuery { Since = now.AddMinutes(-6), Until = now.AddMinutes(-2), Tail = true };
        (await Collect(_sut.LogAsync(handle.AppId, "ps", 0, query, default))).ShouldBe(["middle"]);
        string request = _server.Requests.Last(r => r.Contains("/log", StringComparison.Ordinal));
        request.ShouldContain("timestamps=true");
        request.ShouldContain("follow=true");
        request.ShouldContain("sinceSeconds=");
    }

    [Fact]
    public async Task Cancel_RunningApp_DeletesTheJobsAndTheService()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        _server.SetJobStatus("default", $"{name}-worker", new JsonObject { ["active"] = 2 });

        await _sut.CancelAsync(handle.AppId, default);

        _server.Jobs.ShouldBeEmpty();
        _server.Services.ShouldBeEmpty();
        _server.Requests.ShouldContain(r => r.StartsWith($"DELETE /apis/batch/v1/namespaces/default/jobs/{name}-worker", StringComparison.Ordinal) && r.Contains("propagationPolicy=Background", StringComparison.Ordinal));
        (await _sut.DescribeAsync(handle.AppId, default)).ShouldBeNull();
    }

    [Fact]
    public async Task Cancel_FinishedApp_LeavesItAsItIs()
    {
        (AppHandle handle, string name) = await SubmitAsync();
        _server.SetJobStatus("default", $"{name}-ps", Condition("Complete", "done"));
        _server.SetJobStatus("default", $"{name}-worker", Condition("Failed", "backoff"));

        await _sut.CancelAsync(handle.AppId, default);

        _server.Jobs.Count.ShouldBe(2);
        _server.Requests.ShouldNotContain(r => r.StartsWith("DELETE", StringComparison.Ordinal));
    }

    [Fact]
    public async Task List_GroupsJobsByApp()
    {
        (AppHandle first, string firstName) = await SubmitAsync();
        (AppHandle second, _) = await SubmitAsync(new AppDef { Name = "echo", Roles = [new Role { Name = "echo", Entrypoint = "echo", Image = "busybox" }] });
        _server.SetJobStatus("default", $"{firstName}-ps", new JsonObject { ["active"] = 1 });

        IReadOnlyList<ListedApp> apps = await _sut.ListAsync(default);

        apps.Count.ShouldBe(2);
        ListedApp ddp = apps.Single(a => a.Handle == first);
        ddp.Name.ShouldBe("ddp");
        ddp.State.ShouldBe(AppState.Running);
        apps.Single(a => a.Handle == second).State.ShouldBe(AppState.Pending);
    }

    [Fact]
    public async Task Describe_ApiServerDown_ThrowsLaunchExceptionNamingIt()
    {
        string kubeconfig = Path.Combine(_emptyHome, "down");
        await File.WriteAllTextAsync(kubeconfig, (await File.ReadAllTextAsync(_server.Kubeconfig)).Replace(_server.Url.ToString().TrimEnd('/'), "http://127.0.0.1:1", StringComparison.Ordinal));
        var sut = new KubernetesScheduler(new KubernetesSchedulerSettings { Kubeconfig = kubeconfig, Locator = new KubeconfigLocator(_ => null, _emptyHome) });
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => sut.DescribeAsync("default:x", default));
        ex.Message.ShouldContain("127.0.0.1:1");
    }

    private static JsonObject Condition(string type, string message) => new()
    {
        ["conditions"] = new JsonArray(new JsonObject { ["type"] = type, ["status"] = "True", ["message"] = message }),
    };

    private static async Task<List<string>> Collect(IAsyncEnumerable<string> lines)
    {
        var result = new List<string>();
        await foreach (string line in lines)
        {
            result.Add(line);
        }
        return result;
    }
}
