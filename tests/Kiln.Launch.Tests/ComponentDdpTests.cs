using Kiln.Launch.Components;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

public sealed class ComponentDdpTests
{
    private const string Kiln = "/opt/kiln/kiln";

    private static readonly ComponentContext s_context = new("/tmp", Kiln) { GetEnvironmentVariable = _ => null };

    [Fact]
    public void Build_2x4_RunsTwoAgentsOfFourWorkersWithRendezvousOnRank0()
    {
        AppDef app = ComponentCatalog.Build("dist.ddp", ["-j", "2x4", "--script", "train.dll", "--", "--epochs", "3"], s_context);

        app.Name.ShouldBe("train");
        Role role = app.Roles.ShouldHaveSingleItem();
        role.Name.ShouldBe("trainer");
        role.Entrypoint.ShouldBe(Kiln);
        role.NumReplicas.ShouldBe(2);
        role.MinReplicas.ShouldBeNull();
        role.Resource.ShouldBe(new Resource(2, 0, 1024));
        role.PortMap.ShouldBe(new Dictionary<string, int> { ["c10d"] = 29500 });
        role.Args.ShouldBe(
        [
            "agent", "--nnodes", "2", "--nproc-per-node", "4",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "$${${rank0_env}}:29500", "--rdzv-id", "${app_id}",
            "--max-restarts", "0", "--node-rank", "${replica_id}",
            "--", "dotnet", "train.dll", "--epochs", "3",
        ]);
    }

    [Fact]
    public void Build_2x4_EndpointResolvesPerReplicaToTheRank0HostVariable()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["-j", "2x4", "--entrypoint", "./train"], s_context).Roles[0];

        Role applied = new Macros("ddp-1a2b", "/work", "KILN_RANK0_HOST").ApplyTo(role, 1);

        applied.Args.ShouldContain("${KILN_RANK0_HOST}:29500");
        applied.Args[applied.Args.ToList().IndexOf("--rdzv-id") + 1].ShouldBe("ddp-1a2b");
        applied.Args[applied.Args.ToList().IndexOf("--node-rank") + 1].ShouldBe("1");
    }

    [Fact]
    public void Build_1Colon3x2_IsElasticFromOneToThreeNodes()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["-j", "1:3x2", "-m", "trainer.main", "--max-restarts", "3"], s_context).Roles[0];

        role.NumReplicas.ShouldBe(3);
        role.MinReplicas.ShouldBe(1);
        Arg(role, "--nnodes").ShouldBe("1:3");
        Arg(role, "--nproc-per-node").ShouldBe("2");
        Arg(role, "--max-restarts").ShouldBe("3");
        role.Args.SkipWhile(a => a != "--").ShouldBe(["--", "python3", "-m", "trainer.main"]);
    }

    [Fact]
    public void Build_1x1_IsStandaloneOnLoopback()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["-j", "1x1", "--entrypoint", "/bin/true"], s_context).Roles[0];

        role.NumReplicas.ShouldBe(1);
        role.Args.ShouldContain("--standalone");
        Arg(role, "--rdzv-endpoint").ShouldBe("127.0.0.1:0");
        Arg(role, "--rdzv-backend").ShouldBe("c10d");
        role.PortMap.ShouldBeEmpty();
    }

    [Fact]
    public void Build_DefaultJ_IsOneNodeOfTwoWorkers()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["--entrypoint", "/bin/true"], s_context).Roles[0];

        Arg(role, "--nnodes").ShouldBe("1");
        Arg(role, "--nproc-per-node").ShouldBe("2");
    }

    [Fact]
    public void Build_JWithWorkersOnly_IsOneNode()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["-j", "4", "--entrypoint", "/bin/true"], s_context).Roles[0];

        Arg(role, "--nnodes").ShouldBe("1");
        Arg(role, "--nproc-per-node").ShouldBe("4");
    }

    [Theory]
    [InlineData("0x2")]
    [InlineData("2x0")]
    [InlineData("2x")]
    [InlineData("x2")]
    [InlineData("a:b")]
    [InlineData("3:2x4")]
    [InlineData("1:4")]
    [InlineData("2x4x1")]
    [InlineData("-1x2")]
    [InlineData("99999999999x1")]
    public void Build_MalformedJ_NamesTheOptionAndTheExpectedForm(string j)
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["-j", j, "--entrypoint", "/bin/true"], s_context));

        e.Message.ShouldStartWith("component dist.ddp: option -j");
        e.Message.ShouldContain("[MIN:]NxM");
        e.Message.ShouldContain(j);
    }

    [Fact]
    public void Build_ExplicitEndpointAndEtcd_ArePassedOn()
    {
        Role role = ComponentCatalog.Build(
            "dist.ddp",
            ["-j", "2x1", "--rdzv-backend", "etcd", "--rdzv-endpoint", "etcd.local:2379", "--entrypoint", "./w"],
            s_context).Roles[0];

        Arg(role, "--rdzv-backend").ShouldBe("etcd");
        Arg(role, "--rdzv-endpoint").ShouldBe("etcd.local:2379");
        role.Args.ShouldNotContain("--standalone");
    }

    [Fact]
    public void Build_EtcdWithoutEndpoint_IsRefused()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--rdzv-backend", "etcd", "--entrypoint", "./w"], s_context));

        e.Message.ShouldContain("etcd rendezvous backend needs --rdzv-endpoint");
    }

    [Fact]
    public void Build_UnknownBackend_ListsTheBackends()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--rdzv-backend", "zk", "--entrypoint", "./w"], s_context));

        e.Message.ShouldContain("--rdzv-backend is one of c10d, etcd, static, not 'zk'");
    }

    [Fact]
    public void Build_NoProgram_SaysWhichOptionsGiveOne()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["-j", "2x2"], s_context));

        e.Message.ShouldContain("--script PATH, -m MODULE or --entrypoint PATH");
    }

    [Fact]
    public void Build_TwoPrograms_IsRefused()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--script", "a.dll", "-m", "b"], s_context));

        e.Message.ShouldContain("give only one of --script, -m and --entrypoint");
    }

    [Fact]
    public void Build_DebugEnvAndResources_AreSet_UserEnvWins()
    {
        Role role = ComponentCatalog.Build(
            "dist.ddp",
            ["--debug", "--env", "NCCL_DEBUG=WARN,FOO=bar", "--cpu", "8", "--gpu", "2", "--memMB", "4096", "--name", "bert", "--image", "/src", "--script", "train.py"],
            s_context).Roles[0];

        role.Name.ShouldBe("bert");
        role.Image.ShouldBe("/src");
        role.Env["NCCL_DEBUG"].ShouldBe("WARN");
        role.Env["TORCH_DISTRIBUTED_DEBUG"].ShouldBe("DETAIL");
        role.Env["FOO"].ShouldBe("bar");
        role.Resource.ShouldBe(new Resource(8, 2, 4096));
        role.Args.SkipWhile(a => a != "--").ShouldBe(["--", "python3", "train.py"]);
    }

    [Fact]
    public void Build_NcclNvlsEnableInTheSubmittingEnvironment_IsPassedOn()
    {
        ComponentContext context = s_context with { GetEnvironmentVariable = name => name == "NCCL_NVLS_ENABLE" ? "0" : null };

        Role role = ComponentCatalog.Build("dist.ddp", ["--entrypoint", "./w"], context).Roles[0];

        role.Env["NCCL_NVLS_ENABLE"].ShouldBe("0");
        ComponentCatalog.Build("dist.ddp", ["--entrypoint", "./w"], s_context).Roles[0].Env.ShouldNotContainKey("NCCL_NVLS_ENABLE");
    }

    [Fact]
    public void Build_MonitorInterval_IsPassedToTheAgent()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["--monitor-interval", "0.5", "--entrypoint", "./w"], s_context).Roles[0];

        Arg(role, "--monitor-interval").ShouldBe("0.5");
    }

    [Fact]
    public void Build_KilnconfigDefaults_ApplyUnderTheCommandLine()
    {
        ComponentContext context = s_context with
        {
            ConfigSections = new Dictionary<string, IReadOnlyDictionary<string, string>>
            {
                ["component:dist.ddp"] = new Dictionary<string, string>
                {
                    ["j"] = "2x8",
                    ["rdzv-backend"] = "static",
                    ["memMB"] = "8192",
                    ["max_restarts"] = "2",
                    ["entrypoint"] = "./from-config",
                },
            },
        };

        Role fromConfig = ComponentCatalog.Build("dist.ddp", [], context).Roles[0];
        Role overridden = ComponentCatalog.Build("dist.ddp", ["-j", "1x1", "--memMB", "512", "--max-restarts", "5"], context).Roles[0];

        Arg(fromConfig, "--nproc-per-node").ShouldBe("8");
        Arg(fromConfig, "--rdzv-backend").ShouldBe("static");
        Arg(fromConfig, "--max-restarts").ShouldBe("2");
        fromConfig.Resource.MemMB.ShouldBe(8192);
        fromConfig.Args[^1].ShouldBe("./from-config");
        Arg(overridden, "--nproc-per-node").ShouldBe("1");
        Arg(overridden, "--max-restarts").ShouldBe("5");
        overridden.Resource.MemMB.ShouldBe(512);
    }

    [Fact]
    public void Build_UnknownKilnconfigKey_NamesTheSectionAndKey()
    {
        ComponentContext context = s_context with
        {
            ConfigSections = new Dictionary<string, IReadOnlyDictionary<string, string>>
            {
                ["component:dist.ddp"] = new Dictionary<string, string> { ["nodes"] = "2" },
            },
        };

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--entrypoint", "./w"], context));

        e.Message.ShouldContain(".kilnconfig [component:dist.ddp] has an unknown key 'nodes'");
    }

    [Fact]
    public void Build_LauncherMpirun_IsPassedToTheAgent_AndOnlyForOneNode()
    {
        Role role = ComponentCatalog.Build("dist.ddp", ["-j", "1x2", "--launcher", "mpirun", "--script", "train.dll"], s_context).Roles[0];
        Arg(role, "--launcher").ShouldBe("mpirun");
        role.Args.SkipWhile(a => a != "--").ShouldBe(["--", "dotnet", "train.dll"]);

        ComponentCatalog.Build("dist.ddp", ["-j", "1x2", "--script", "train.dll"], s_context).Roles[0].Args.ShouldNotContain("--launcher");
        Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["-j", "2x2", "--launcher", "mpirun", "--script", "t.dll"], s_context))
            .Message.ShouldContain("--launcher mpirun runs one node");
        Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--launcher", "srun", "--script", "t.dll"], s_context))
            .Message.ShouldContain("--launcher is process or mpirun");
    }

    private static string Arg(Role role, string flag)
    {
        int index = role.Args.ToList().IndexOf(flag);
        index.ShouldBeGreaterThanOrEqualTo(0, $"{flag} is missing from {string.Join(' ', role.Args)}");
        return role.Args[index + 1];
    }
}
