using k8s;
using k8s.Models;
using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Kubernetes;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests.Kubernetes;

/// <summary>The objects the kubernetes scheduler generates (no cluster involved).</summary>
public sealed class KubernetesObjectsTests
{
    private static readonly IReadOnlyDictionary<string, string> s_noOptions = new Dictionary<string, string>();

    private static Role Trainer(int replicas = 1) => new()
    {
        Name = "trainer",
        Entrypoint = "python",
        Image = "ghcr.io/kiln/train:1",
        Args = ["-m", "train", "--rank=${replica_id}", "--app=${app_id}", "--rdzv=$${rank0_env}"],
        NumReplicas = replicas,
    };

    private static AppDef App(params Role[] roles) => new() { Name = "ddp", Roles = roles };

    private static KubernetesApp Build(AppDef app, IReadOnlyDictionary<string, string>? options = null) =>
        KubernetesObjects.Build(app, KubernetesRunOptions.Parse(options ?? s_noOptions), suffix: "0a1b2c3d");

    [Fact]
    public void Build_OneRole_IndexedJobWithOnePodPerReplica()
    {
        KubernetesApp sut = Build(App(Trainer(replicas: 4)));

        sut.Name.ShouldBe("ddp-0a1b2c3d");
        sut.AppId.ShouldBe("default:ddp-0a1b2c3d");
        V1Job job = sut.Jobs.ShouldHaveSingleItem();
        job.ApiVersion.ShouldBe("batch/v1");
        job.Kind.ShouldBe("Job");
        job.Metadata.Name.ShouldBe("ddp-0a1b2c3d-trainer");
        job.Metadata.NamespaceProperty.ShouldBe("default");
        job.Spec.Completions.ShouldBe(4);
        job.Spec.Parallelism.ShouldBe(4);
        job.Spec.CompletionMode.ShouldBe("Indexed");
        job.Spec.BackoffLimit.ShouldBe(0);
        job.Spec.TtlSecondsAfterFinished.ShouldBeNull();
        V1PodSpec pod = job.Spec.Template.Spec;
        pod.RestartPolicy.ShouldBe("Never");
        pod.Subdomain.ShouldBe("ddp-0a1b2c3d");
        V1Container container = pod.Containers.ShouldHaveSingleItem();
        container.Image.ShouldBe("ghcr.io/kiln/train:1");
        container.Command.ShouldBe(["python"]);
        container.Args.ShouldBe(["-m", "train", "--rank=$(KILN_REPLICA_ID)", "--app=ddp-0a1b2c3d", "--rdzv=$${rank0_env}"]);
    }

    [Fact]
    public void Build_Labels_AppAndRoleOnJobsPodsAndService()
    {
        KubernetesApp sut = Build(App(Trainer()));
        V1Job job = sut.Jobs[0];
        job.Metadata.Labels["kiln.app-id"].ShouldBe("ddp-0a1b2c3d");
        job.Metadata.Labels["kiln.role"].ShouldBe("trainer");
        job.Spec.Template.Metadata.Labels["kiln.app-id"].ShouldBe("ddp-0a1b2c3d");
        job.Spec.Template.Metadata.Labels["kiln.role"].ShouldBe("trainer");
        job.Metadata.Annotations["kiln.app-name"].ShouldBe("ddp");
        sut.Service.Metadata.Labels["kiln.app-id"].ShouldBe("ddp-0a1b2c3d");
    }

    [Fact]
    public void Build_Service_IsHeadlessSelectsTheAppAndPublishesNotReadyPods()
    {
        KubernetesApp sut = Build(App(Trainer() with { PortMap = new Dictionary<string, int> { ["c10d"] = 29400 } }));
        V1Service service = sut.Service;
        service.Kind.ShouldBe("Service");
        service.Metadata.Name.ShouldBe("ddp-0a1b2c3d");
        service.Spec.ClusterIP.ShouldBe("None");
        service.Spec.PublishNotReadyAddresses.ShouldBe(true);
        service.Spec.Selector.ShouldBe(new Dictionary<string, string> { ["kiln.app-id"] = "ddp-0a1b2c3d" });
        V1ServicePort port = service.Spec.Ports.ShouldHaveSingleItem();
        (port.Name, port.Port).ShouldBe(("c10d", 29400));
        sut.Jobs[0].Spec.Template.Spec.Containers[0].Ports.ShouldHaveSingleItem().ContainerPort.ShouldBe(29400);
    }

    [Fact]
    public void Build_TwoRoles_TwoJobsAndRank0IsTheFirstRolesReplica0()
    {
        Role ps = new() { Name = "ps", Entrypoint = "server", Image = "img:ps", NumReplicas = 2 };
        Role worker = new() { Name = "worker", Entrypoint = "worker", Image = "img:w", NumReplicas = 3, Args = ["--ps=${rank0_env}"] };
        KubernetesApp sut = Build(App(ps, worker));

        sut.Jobs.Select(j => j.Metadata.Name).ShouldBe(["ddp-0a1b2c3d-ps", "ddp-0a1b2c3d-worker"]);
        sut.Jobs.Select(j => j.Spec.Completions).ShouldBe([2, 3]);
        foreach (V1Job job in sut.Jobs)
        {
            V1EnvVar rank0 = job.Spec.Template.Spec.Containers[0].Env.Single(e => e.Name == "KILN_RANK0_HOST");
            rank0.Value.ShouldBe("ddp-0a1b2c3d-ps-0.ddp-0a1b2c3d");
        }
        sut.Jobs[1].Spec.Template.Spec.Containers[0].Args.ShouldBe(["--ps=KILN_RANK0_HOST"]);
        sut.Jobs[1].Metadata.Labels["kiln.role"].ShouldBe("worker");
    }

    [Fact]
    public void Build_Env_ReplicaIdFirstFromTheCompletionIndexThenKilnThenUsersWithMacros()
    {
        Role role = Trainer() with
        {
            Env = new Dictionary<string, string>
            {
                ["RANK_HINT"] = "${replica_id}",
                ["HOME_COPY"] = "$HOME and $(NOT_EXPANDED)",
                ["MASTER"] = "${rank0_env}",
                ["RUN"] = "${app_id}",
            },
        };
        IList<V1EnvVar> env = Build(App(role)).Jobs[0].Spec.Template.Spec.Containers[0].Env;

        env[0].Name.ShouldBe("KILN_REPLICA_ID");
        env[0].ValueFrom.FieldRef.FieldPath.ShouldBe("metadata.annotations['batch.kubernetes.io/job-completion-index']");
        env.Single(e => e.Name == "KILN_APP_ID").Value.ShouldBe("ddp-0a1b2c3d");
        env.Single(e => e.Name == "KILN_ROLE_NAME").Value.ShouldBe("trainer");
        env.Single(e => e.Name == "KILN_NUM_REPLICAS").Value.ShouldBe("1");
        env.Single(e => e.Name == "RANK_HINT").Value.ShouldBe("$(KILN_REPLICA_ID)");
        env.Single(e => e.Name == "HOME_COPY").Value.ShouldBe("$$HOME and $$(NOT_EXPANDED)");
        env.Single(e => e.Name == "MASTER").Value.ShouldBe("KILN_RANK0_HOST");
        env.Single(e => e.Name == "RUN").Value.ShouldBe("ddp-0a1b2c3d");
    }

    [Fact]
    public void Build_DdpStyleArguments_ReachTheAgentUnchanged()
    {
        // dist.ddp writes "$${${rank0_env}}:29500" and "${replica_id}"; the container must see "${KILN_RANK0_HOST}:29500"
        // (expanded by kiln agent) and the pod's index. Kubernetes turns "$$" into "$".
        Role role = Trainer() with { Args = ["--rdzv-endpoint", "$${${rank0_env}}:29500", "--node-rank", "${replica_id}", "--rdzv-id", "${app_id}"] };
        Build(App(role)).Jobs[0].Spec.Template.Spec.Containers[0].Args
            .ShouldBe(["--rdzv-endpoint", "$${KILN_RANK0_HOST}:29500", "--node-rank", "$(KILN_REPLICA_ID)", "--rdzv-id", "ddp-0a1b2c3d"]);
    }

    [Fact]
    public void Build_Resources_CpuMemoryInMiAndGpusAsRequestsAndLimits()
    {
        KubernetesApp sut = Build(App(Trainer() with { Resource = new Resource(Cpu: 8, Gpu: 2, MemMB: 65536) }));
        V1ResourceRequirements resources = sut.Jobs[0].Spec.Template.Spec.Containers[0].Resources;
        foreach (IDictionary<string, ResourceQuantity> quantities in new[] { resources.Requests, resources.Limits })
        {
            quantities["cpu"].ToString().ShouldBe("8");
            quantities["memory"].ToString().ShouldBe("64Gi");
            quantities["nvidia.com/gpu"].ToString().ShouldBe("2");
        }
    }

    [Fact]
    public void Build_NoGpu_AsksForNoGpuResource()
    {
        KubernetesApp sut = Build(App(Trainer() with { Resource = new Resource(Cpu: 2, Gpu: 0, MemMB: 1000) }));
        V1ResourceRequirements resources = sut.Jobs[0].Spec.Template.Spec.Containers[0].Resources;
        resources.Limits.ShouldNotContainKey("nvidia.com/gpu");
        resources.Requests["memory"].ToString().ShouldBe("1000Mi");
    }

    [Fact]
    public void Build_MaxRetries_BecomeTheBackoffLimit()
    {
        Build(App(Trainer() with { MaxRetries = 3 })).Jobs[0].Spec.BackoffLimit.ShouldBe(3);
    }

    [Fact]
    public void Build_Mounts_BecomeHostPathVolumes()
    {
        Role role = Trainer() with { Mounts = [new Mount("/data", "/mnt/data", ReadOnly: true), new Mount("/scratch", "/tmp/s")] };
        V1PodSpec pod = Build(App(role)).Jobs[0].Spec.Template.Spec;
        pod.Volumes.Select(v => (v.Name, v.HostPath.Path)).ShouldBe([("mount-0", "/data"), ("mount-1", "/scratch")]);
        pod.Containers[0].VolumeMounts.Select(m => (m.Name, m.MountPath, m.ReadOnlyProperty)).ShouldBe([("mount-0", "/mnt/data", (bool?)true), ("mount-1", "/tmp/s", (bool?)false)]);
    }

    [Fact]
    public void Build_RunOptions_ApplyToJobsAndPods()
    {
        var options = new Dictionary<string, string>
        {
            ["namespace"] = "ml",
            ["service_account"] = "trainer-sa",
            ["priority_class"] = "high",
            ["image_pull_secret"] = "regcred",
            ["ttl_seconds_after_finished"] = "3600",
        };
        KubernetesApp sut = Build(App(Trainer()), options);
        sut.AppId.ShouldBe("ml:ddp-0a1b2c3d");
        sut.Service.Metadata.NamespaceProperty.ShouldBe("ml");
        V1Job job = sut.Jobs[0];
        job.Metadata.NamespaceProperty.ShouldBe("ml");
        job.Spec.TtlSecondsAfterFinished.ShouldBe(3600);
        job.Spec.Template.Spec.ServiceAccountName.ShouldBe("trainer-sa");
        job.Spec.Template.Spec.PriorityClassName.ShouldBe("high");
        job.Spec.Template.Spec.ImagePullSecrets.ShouldHaveSingleItem().Name.ShouldBe("regcred");
    }

    [Fact]
    public void Build_Metadata_BecomesJobAnnotations()
    {
        AppDef app = App(Trainer()) with { Metadata = new Dictionary<string, string> { ["team"] = "vision", ["example.com/cost-center"] = "42" } };
        V1Job job = Build(app).Jobs[0];
        job.Metadata.Annotations["team"].ShouldBe("vision");
        job.Spec.Template.Metadata.Annotations["example.com/cost-center"].ShouldBe("42");
    }

    [Theory]
    [InlineData("My_App!", "my-app-0a1b2c3d")]
    [InlineData("42nd", "app-42nd-0a1b2c3d")]
    [InlineData("a-very-long-application-name-that-goes-on", "a-very-long-application-name-t-0a1b2c3d")]
    public void Build_AppName_BecomesADnsLabelStartingWithALetter(string appName, string expected)
    {
        KubernetesApp sut = Build(App(Trainer()) with { Name = appName });
        sut.Name.ShouldBe(expected);
        sut.Jobs[0].Metadata.Name.Length.ShouldBeLessThanOrEqualTo(56);
    }

    [Fact]
    public void Build_RoleWithoutImage_ThrowsLaunchExceptionNamingTheRole()
    {
        LaunchException ex = Should.Throw<LaunchException>(() => Build(App(Trainer() with { Image = "" })));
        ex.Message.ShouldContain("trainer");
        ex.Message.ShouldContain("image");
    }

    [Fact]
    public void Build_RolesThatSanitizeToTheSameName_ThrowLaunchException()
    {
        Role a = Trainer() with { Name = "Worker" };
        Role b = Trainer() with { Name = "worker!" };
        Should.Throw<LaunchException>(() => Build(App(a, b))).Message.ShouldContain("rename");
    }

    [Theory]
    [InlineData("queue", "x")]
    [InlineData("namespace", "Not_A_Label")]
    [InlineData("ttl_seconds_after_finished", "soon")]
    public void Parse_BadRunOption_ThrowsLaunchExceptionNamingIt(string key, string value)
    {
        Should.Throw<LaunchException>(() => KubernetesRunOptions.Parse(new Dictionary<string, string> { [key] = value })).Message.ShouldContain(key);
    }

    [Fact]
    public void DryRun_Yaml_ParsesBackToTheSameObjects()
    {
        Role ps = new() { Name = "ps", Entrypoint = "server", Image = "img:ps", NumReplicas = 2, Resource = new Resource(4, 1, 2048), MaxRetries = 2 };
        var sut = new KubernetesScheduler();
        DryRunInfo info = sut.SubmitDryRun(App(ps, Trainer(replicas: 3)), new Dictionary<string, string> { ["namespace"] = "ml" });

        info.AppId.ShouldStartWith("ml:ddp-");
        info.Options["namespace"].ShouldBe("ml");
        info.Request.ShouldContain("kind: Job");
        info.Request.ShouldContain("completionMode: Indexed");
        List<object> objects = KubernetesYaml.LoadAllFromString(info.Request);
        objects.Count.ShouldBe(3);
        objects[0].ShouldBeOfType<V1Service>();

        KubernetesApp back = KubernetesApp.FromYaml(info.Artifacts["objects.yaml"]);
        back.AppId.ShouldBe(info.AppId);
        back.Jobs.Count.ShouldBe(2);
        V1Job psJob = back.Jobs[0];
        psJob.Spec.Completions.ShouldBe(2);
        psJob.Spec.BackoffLimit.ShouldBe(2);
        psJob.Spec.Template.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"].ToString().ShouldBe("1");
        psJob.Spec.Template.Spec.Containers[0].Resources.Requests["memory"].ToString().ShouldBe("2Gi");
        back.Jobs[1].Spec.Template.Spec.Containers[0].Args.ShouldContain("--rank=$(KILN_REPLICA_ID)");
        back.Jobs[1].Spec.Template.Spec.Containers[0].Env[0].ValueFrom.FieldRef.FieldPath.ShouldContain("job-completion-index");
    }

    [Fact]
    public void Scheduler_NameAndRunOptions()
    {
        var sut = new KubernetesScheduler();
        sut.Name.ShouldBe("kubernetes");
        sut.RunOptions.Select(o => o.Name).ShouldBe(["namespace", "kubeconfig", "service_account", "priority_class", "image_pull_secret", "ttl_seconds_after_finished"]);
    }
}

/// <summary><c>kiln run -s kubernetes</c> finds the scheduler in the catalog.</summary>
public sealed class KubernetesCatalogTests
{
    [Fact]
    public void SchedulerCatalog_Kubernetes_CreatesTheKubernetesScheduler()
    {
        SchedulerCatalog.Names.ShouldContain("kubernetes");
        IScheduler sut = SchedulerCatalog.Create("kubernetes", new SchedulerContext { StateDirectory = Path.GetTempPath(), GetEnvironmentVariable = _ => null });
        sut.ShouldBeOfType<KubernetesScheduler>().Name.ShouldBe("kubernetes");
    }

    [Fact]
    public async Task SchedulerCatalog_Kubernetes_LooksForKubeconfigThroughTheContextsEnvironment()
    {
        string home = Path.Combine(Path.GetTempPath(), "kiln-home-" + Guid.NewGuid().ToString("N")[..12]);
        IScheduler sut = SchedulerCatalog.Create("kubernetes", new SchedulerContext
        {
            StateDirectory = Path.GetTempPath(),
            GetEnvironmentVariable = v => v switch { "KUBECONFIG" => "/nonexistent/kiln-test-config", "HOME" => home, _ => null },
        });
        LaunchException ex = await Should.ThrowAsync<LaunchException>(() => sut.ListAsync(default));
        ex.Message.ShouldContain("/nonexistent/kiln-test-config");
        ex.Message.ShouldContain(Path.Combine(home, ".kube", "config"));
    }
}
