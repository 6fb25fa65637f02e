using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

public sealed class SpecTests
{
    [Theory]
    [InlineData("local://kiln/echo-1a2b", "local", "kiln", "echo-1a2b")]
    [InlineData("slurm:///1234", "slurm", "", "1234")]
    [InlineData("kubernetes://ns/sub/app", "kubernetes", "ns/sub", "app")]
    public void Handle_ParsesAndFormatsBack(string text, string scheduler, string session, string appId)
    {
        AppHandle handle = AppHandle.Parse(text);
        handle.ShouldBe(new AppHandle(scheduler, session, appId));
        handle.ToString().ShouldBe(text);
    }

    [Theory]
    [InlineData("")]
    [InlineData("local")]
    [InlineData("local://kiln/")]
    [InlineData("://kiln/x")]
    public void Handle_Malformed_IsRefusedWithTheExpectedForm(string text)
    {
        AppHandle.TryParse(text, out _).ShouldBeFalse();
        Should.Throw<FormatException>(() => AppHandle.Parse(text)).Message.ShouldContain("SCHEDULER://SESSION/APP_ID");
    }

    [Fact]
    public void Macros_AreReplacedPerReplica_UnknownOnesKept_AndDollarDollarEscapes()
    {
        var role = new Role
        {
            Name = "trainer",
            Entrypoint = "${img_root}/bin/train",
            Args = ["--id", "${app_id}-${replica_id}", "--master", "$${rank0_env}", "${unknown}", "of ${num_replicas}"],
            Env = new Dictionary<string, string> { ["MASTER"] = "${rank0_env}", ["ROLE"] = "${role_name}" },
            NumReplicas = 3,
        };
        Role applied = new Macros("app-7", "/work", "KILN_RANK0_HOST").ApplyTo(role, 2);
        applied.Entrypoint.ShouldBe("/work/bin/train");
        applied.Args.ShouldBe(["--id", "app-7-2", "--master", "${rank0_env}", "${unknown}", "of 3"]);
        applied.Env["MASTER"].ShouldBe("KILN_RANK0_HOST");
        applied.Env["ROLE"].ShouldBe("trainer");
        role.Args[1].ShouldBe("${app_id}-${replica_id}");
    }

    [Fact]
    public void States_TerminalAndDisplayNamesMatchTorchX()
    {
        ((int)AppState.Unknown).ShouldBe(7);
        new[] { AppState.Succeeded, AppState.Failed, AppState.Cancelled }.ShouldAllBe(s => s.IsTerminal());
        new[] { AppState.Unsubmitted, AppState.Submitted, AppState.Pending, AppState.Running, AppState.Unknown }.ShouldAllBe(s => !s.IsTerminal());
        AppState.Running.ToDisplay().ShouldBe("RUNNING");
    }
}
