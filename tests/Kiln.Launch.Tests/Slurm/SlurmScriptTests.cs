using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Slurm;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests.Slurm;

/// <summary>Dry runs (the sbatch script), run options, the state table and the parsers; no cluster needed.</summary>
public sealed class SlurmScriptTests
{
    private static SlurmScheduler CreateSut(Func<string, string?>? which = null) =>
        new(slurmConf: null, which: which ?? (tool => "/usr/bin/" + tool), currentDirectory: () => "/home/me/project");

    [Fact]
    public void SubmitDryRun_OneRole_IsAPlainJobWithOneStepPerReplica()
    {
        var app = new AppDef
        {
            Name = "train",
            Roles =
            [
                new Role
                {
                    Name = "worker",
                    Entrypoint = "python",
                    Args = ["train.py", "--rank", "${replica_id}", "--run", "run-${app_id}", "it's"],
                    Env = new Dictionary<string, string> { ["MASTER"] = "${rank0_env}" },
                    NumReplicas = 2,
                    Resource = new Resource(Cpu: 4, Gpu: 1, MemMB: 1000),
                },
            ],
        };

        DryRunInfo info = CreateSut().SubmitDryRun(app, new Dictionary<string, string> { ["partition"] = "gpu", ["time"] = "1:00:00", ["job_dir"] = "/scratch/jobs" });
        string script = info.Request;

        script.ShouldStartWith("#!/bin/bash\n");
        script.ShouldContain("#SBATCH --job-name=train\n");
        script.ShouldContain("#SBATCH --chdir=/scratch/jobs\n");
        script.ShouldContain("#SBATCH --output=/scratch/jobs/slurm-%j.out\n");
        script.ShouldContain("#SBATCH --ntasks=2 --cpus-per-task=4 --mem-per-cpu=250M --gpus-per-task=1\n");
        script.ShouldContain("#SBATCH --partition=gpu\n");
        script.ShouldContain("#SBATCH --time=1:00:00\n");
        script.ShouldNotContain("hetjob");
        script.ShouldNotContain("--het-group");
        script.ShouldContain("srun --nodes=1 --ntasks=1 --exact --nodelist=\"$KILN_RANK0_NODE\" --chdir=/home/me/project");
        script.ShouldContain("--output=\"$kiln_job_dir/slurm-$SLURM_JOB_ID-worker-0.out\" --error=\"$kiln_job_dir/slurm-$SLURM_JOB_ID-worker-0.err\"");
        script.ShouldContain("--output=\"$kiln_job_dir/slurm-$SLURM_JOB_ID-worker-1.out\"");
        script.ShouldContain("KILN_APP_ID=\"$SLURM_JOB_ID\" MASTER=KILN_RANK0_HOST \\\n    python train.py --rank 0 --run run-\"$SLURM_JOB_ID\" 'it'\\''s' &\n");
        script.ShouldContain("python train.py --rank 1 --run run-\"$SLURM_JOB_ID\"");
        script.ShouldContain("export KILN_RANK0_NODE=\"$(scontrol show hostnames \"${SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}\" | head -n 1)\"");
        script.ShouldContain("export KILN_RANK0_HOST=\"${kiln_rank0_addr:-$KILN_RANK0_NODE}\"");
        script.ShouldContain("for _ in $(seq 1 2); do");
        script.ShouldContain("kiln_max_retries=0\n");
        info.AppId.ShouldStartWith("train-");
        info.Artifacts["script_path"].ShouldStartWith("/scratch/jobs/train-");
        info.Options["job_dir"].ShouldBe("/scratch/jobs");
    }

    [Fact]
    public void SubmitDryRun_TwoRoles_IsAHeterogeneousJobWithOneComponentPerRole()
    {
        var app = new AppDef
        {
            Name = "ps",
            Roles =
            [
                new Role { Name = "trainer", Entrypoint = "/opt/train", NumReplicas = 3, MaxRetries = 2, Resource = new Resource(2, 0, 2048) },
                new Role { Name = "server", Entrypoint = "/opt/serve", Image = "/opt", NumReplicas = 1, Resource = new Resource(1, 0, 512) },
            ],
        };

        string script = CreateSut().SubmitDryRun(app, new Dictionary<string, string>
        {
            ["comment"] = "nightly run",
            ["mail_user"] = "me@example.com",
            ["exclusive"] = "true",
            ["constraint"] = "a100&ib",
            ["job_dir"] = "jobs",
        }).Request;

        script.ShouldContain("#SBATCH --chdir=/home/me/project/jobs\n");
        script.ShouldContain("#SBATCH --comment=\"nightly run\"\n");
        script.ShouldContain("#SBATCH --mail-user=me@example.com\n#SBATCH --mail-type=END,FAIL\n");
        string[] components = script.Split("#SBATCH hetjob\n");
        components.Length.ShouldBe(2);
        components[0].ShouldContain("#SBATCH --ntasks=3 --cpus-per-task=2 --mem-per-cpu=1024M\n");
        components[0].ShouldContain("#SBATCH --constraint=a100&ib\n#SBATCH --exclusive\n");
        components[1].ShouldStartWith("# component 1: role server, 1 replica(s)\n#SBATCH --ntasks=1 --cpus-per-task=1 --mem-per-cpu=512M\n");
        components[1].ShouldContain("#SBATCH --exclusive\n");
        script.ShouldContain("srun --het-group=0 --nodes=1 --ntasks=1 --exact --nodelist=\"$KILN_RANK0_NODE\"");
        script.ShouldContain("srun --het-group=0 --nodes=1 --ntasks=1 --exact --chdir=/home/me/project");
        script.ShouldContain("srun --het-group=1 --nodes=1 --ntasks=1 --exact --chdir=/opt");
        script.ShouldContain("slurm-$SLURM_JOB_ID-server-0.err");
        script.ShouldContain("for _ in $(seq 1 4); do");
        script.ShouldContain("kiln_max_retries=2\n");
        script.ShouldContain("scontrol requeue \"$SLURM_JOB_ID\"");
        script.ShouldContain("printf '%s' 'trainer 3\nserver 1\n' > \"$kiln_job_dir/slurm-$SLURM_JOB_ID.roles\"");
    }

    [Fact]
    public void SubmitDryRun_WithoutSbatch_NamesTheMissingTools()
    {
        SlurmScheduler sut = CreateSut(which: _ => null);
        AppDef app = new() { Name = "x", Roles = [new Role { Name = "r", Entrypoint = "true" }] };

        Should.Throw<LaunchException>(() => sut.SubmitDryRun(app, new Dictionary<string, string>()))
            .Message.ShouldBe("slurm scheduler needs sbatch/squeue on PATH (install slurm-client)");
    }

    [Fact]
    public void SubmitDryRun_BadOptionsAndNames_AreAllReportedAtOnce()
    {
        SlurmScheduler sut = CreateSut();
        AppDef app = new() { Name = "x", Roles = [new Role { Name = "r", Entrypoint = "true" }] };

        string message = Should.Throw<LaunchException>(() => sut.SubmitDryRun(app, new Dictionary<string, string>
        {
            ["partitoin"] = "gpu",
            ["exclusive"] = "maybe",
            ["time"] = "1:00\n#SBATCH --uid=0",
        })).Message;
        message.ShouldContain("unknown slurm option \"partitoin\"");
        message.ShouldContain("exclusive=\"maybe\" is not a boolean");
        message.ShouldContain("slurm option time=");

        AppDef badNames = new() { Name = "my app", Roles = [new Role { Name = "a/b", Entrypoint = "" }] };
        string names = Should.Throw<LaunchException>(() => sut.SubmitDryRun(badNames, new Dictionary<string, string>())).Message;
        names.ShouldContain("app name \"my app\"");
        names.ShouldContain("role name \"a/b\"");
        names.ShouldContain("role \"a/b\" has no entrypoint");
    }

    [Theory]
    [InlineData("PENDING", AppState.Pending)]
    [InlineData("CONFIGURING", AppState.Pending)]
    [InlineData("REQUEUED", AppState.Pending)]
    [InlineData("SUSPENDED", AppState.Pending)]
    [InlineData("RUNNING", AppState.Running)]
    [InlineData("COMPLETING", AppState.Running)]
    [InlineData("COMPLETED", AppState.Succeeded)]
    [InlineData("FAILED", AppState.Failed)]
    [InlineData("CANCELLED", AppState.Cancelled)]
    [InlineData("CANCELLED by 0", AppState.Cancelled)]
    [InlineData("TIMEOUT", AppState.Failed)]
    [InlineData("NODE_FAIL", AppState.Failed)]
    [InlineData("OUT_OF_MEMORY", AppState.Failed)]
    [InlineData("PREEMPTED", AppState.Failed)]
    [InlineData("BOOT_FAIL", AppState.Failed)]
    [InlineData("DEADLINE", AppState.Failed)]
    [InlineData("", AppState.Unknown)]
    [InlineData("SOMETHING_NEW", AppState.Unknown)]
    public void ToAppState_MapsSlurmStates(string slurm, AppState expected) => SlurmStates.ToAppState(slurm).ShouldBe(expected);

    [Fact]
    public void ParseSqueueJson_ReadsFlatAnd2302StyleValues_HetComponentsByOffset()
    {
        const string Json = """
            {"jobs": [
              {"job_id": 12, "het_job_id": 12, "het_job_offset": 0, "job_state": "RUNNING", "name": "a", "nodes": "kiln-1",
               "current_working_directory": "/j", "state_reason": "None", "user_name": "me", "restart_cnt": 1},
              {"job_id": 13, "het_job_id": 12, "het_job_offset": 1, "job_state": "RUNNING", "name": "a", "nodes": "kiln-2"},
              {"job_id": {"set": true, "infinite": false, "number": 20}, "het_job_id": {"set": false, "number": 0},
               "job_state": ["PENDING"], "name": "b", "state_reason": "Resources"}
            ]}
            """;

        List<SlurmJobRecord> records = SlurmJobRecords.ParseSqueueJson(Json);

        records.Select(r => (r.JobId, r.Offset, r.State, r.Nodes)).ShouldBe([("12", 0, "RUNNING", "kiln-1"), ("12", 1, "RUNNING", "kiln-2"), ("20", 0, "PENDING", "")]);
        records[0].Restarts.ShouldBe(1);
        records[0].WorkDir.ShouldBe("/j");
        records[2].Reason.ShouldBe("Resources");
    }

    [Fact]
    public void ParseSqueueTextAndSacct_ReadHetIdsAndSkipSteps()
    {
        char u = SlurmJobRecords.Separator;
        List<SlurmJobRecord> squeue = SlurmJobRecords.ParseSqueueText($"7+1{u}COMPLETED{u}a{u}kiln-2{u}None{u}me{u}/j\n8{u}PENDING{u}b{u}{u}Priority{u}me{u}/k\n");
        squeue.Select(r => (r.JobId, r.Offset, r.State, r.WorkDir)).ShouldBe([("7", 1, "COMPLETED", "/j"), ("8", 0, "PENDING", "/k")]);

        List<SlurmJobRecord> sacct = SlurmJobRecords.ParseSacct("9|a|CANCELLED by 0|kiln-1|me|/j\n9.batch|batch|CANCELLED||me|\n10+0|b|TIMEOUT|kiln-3|me|/k\n");
        sacct.Select(r => (r.JobId, r.Offset, SlurmStates.ToAppState(r.State))).ShouldBe([("9", 0, AppState.Cancelled), ("10", 0, AppState.Failed)]);
    }

    [Fact]
    public void AppStateOf_AComponentThatFailed_FailsTheApp()
    {
        SlurmJobRecord[] records = [new("5", 0, "COMPLETED", "a"), new("5", 1, "FAILED", "a")];
        SlurmScheduler.AppStateOf(records).ShouldBe(AppState.Failed);
        SlurmScheduler.AppStateOf([new("5", 0, "CANCELLED", "a"), new("5", 1, "FAILED", "a")]).ShouldBe(AppState.Cancelled);
    }
}
