using Kiln.Launch.Components;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

public sealed class ComponentBuiltInTests
{
    private static readonly ComponentContext s_context = new("/tmp", "/opt/kiln/kiln") { GetEnvironmentVariable = _ => null };

    [Fact]
    public void Echo_Defaults_PrintsHelloWorldOnce()
    {
        AppDef app = ComponentCatalog.Build("utils.echo", [], s_context);

        app.Name.ShouldBe("echo");
        Role role = app.Roles.ShouldHaveSingleItem();
        role.Name.ShouldBe("echo");
        role.Entrypoint.ShouldBe("/bin/echo");
        role.Args.ShouldBe(["hello world"]);
        role.NumReplicas.ShouldBe(1);
        role.Image.ShouldBe("");
    }

    [Fact]
    public void Echo_Options_SetMessageImageAndReplicas()
    {
        AppDef app = ComponentCatalog.Build("utils.echo", ["--msg", "hi there", "--image=/work/app", "--num-replicas", "3"], s_context);

        Role role = app.Roles.ShouldHaveSingleItem();
        role.Args.ShouldBe(["hi there"]);
        role.Image.ShouldBe("/work/app");
        role.NumReplicas.ShouldBe(3);
    }

    [Fact]
    public void Echo_PositionalArgument_IsRefusedWithUsage()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.echo", ["hello"], s_context));

        e.Message.ShouldStartWith("component utils.echo: unexpected argument 'hello'");
        e.Message.ShouldContain("usage: kiln run utils.echo");
    }

    [Fact]
    public void Sh_CommandAfterDoubleDash_RunsWithShC()
    {
        AppDef app = ComponentCatalog.Build("utils.sh", ["--num-replicas", "2", "--env", "A=1,B=x=y", "--", "echo", "$HOSTNAME", "|", "wc", "-c"], s_context);

        app.Name.ShouldBe("sh");
        Role role = app.Roles.ShouldHaveSingleItem();
        role.Entrypoint.ShouldBe("/bin/sh");
        role.Args.ShouldBe(["-c", "echo $HOSTNAME | wc -c"]);
        role.NumReplicas.ShouldBe(2);
        role.Env.ShouldBe(new Dictionary<string, string> { ["A"] = "1", ["B"] = "x=y" });
        role.Resource.ShouldBe(new Resource(1, 0, 1024));
    }

    [Fact]
    public void Sh_CommandAsRemainingArguments_EndsOptionsAtTheFirstWord()
    {
        AppDef app = ComponentCatalog.Build("utils.sh", ["--image", "/w", "ls", "-l", "--num-replicas"], s_context);

        Role role = app.Roles.ShouldHaveSingleItem();
        role.Args.ShouldBe(["-c", "ls -l --num-replicas"]);
        role.Image.ShouldBe("/w");
        role.NumReplicas.ShouldBe(1);
    }

    [Fact]
    public void Sh_NamedResource_IsUsedAndExplicitPartsOverride()
    {
        AppDef app = ComponentCatalog.Build("utils.sh", ["-h", "gpu.small", "--memMB", "2048", "--", "nvidia-smi"], s_context);

        app.Roles[0].Resource.ShouldBe(new Resource(8, 1, 2048));
    }

    [Fact]
    public void Sh_NamedResourceFromKilnconfig_IsFound()
    {
        ComponentContext context = s_context with
        {
            ConfigSections = new Dictionary<string, IReadOnlyDictionary<string, string>>
            {
                ["resource:tiny"] = new Dictionary<string, string> { ["cpu"] = "1", ["memMB"] = "256" },
            },
        };

        AppDef app = ComponentCatalog.Build("utils.sh", ["-h", "tiny", "--", "true"], context);

        app.Roles[0].Resource.ShouldBe(new Resource(1, 0, 256));
    }

    [Fact]
    public void Sh_UnknownNamedResource_ListsTheKnownOnes()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.sh", ["-h", "huge", "--", "true"], s_context));

        e.Message.ShouldContain("no named resource 'huge'");
        e.Message.ShouldContain("gpu.small");
    }

    [Fact]
    public void Sh_NoCommand_IsRefused()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.sh", ["--num-replicas", "2"], s_context));

        e.Message.ShouldStartWith("component utils.sh: no command given");
    }

    [Fact]
    public void Binary_EntrypointArgsAndEnv_AreCarriedOver()
    {
        AppDef app = ComponentCatalog.Build(
            "utils.binary",
            ["--entrypoint", "/usr/bin/env", "--env", "K=V", "--num-replicas", "2", "--", "--flag", "value"],
            s_context);

        app.Name.ShouldBe("binary");
        Role role = app.Roles.ShouldHaveSingleItem();
        role.Entrypoint.ShouldBe("/usr/bin/env");
        role.Args.ShouldBe(["--flag", "value"]);
        role.Env.ShouldBe(new Dictionary<string, string> { ["K"] = "V" });
        role.NumReplicas.ShouldBe(2);
    }

    [Fact]
    public void Binary_MissingEntrypoint_NamesTheOption()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.binary", ["--", "x"], s_context));

        e.Message.ShouldStartWith("component utils.binary: option --entrypoint is required");
    }

    [Theory]
    [InlineData("--nope", "unknown option '--nope'; options: --msg, --image, --num-replicas")]
    [InlineData("--mgs", "unknown option '--mgs'; did you mean --msg?; options:")]
    [InlineData("--msg", "option --msg needs a value (TEXT)")]
    [InlineData("--num-replicas=0", "option --num-replicas takes an integer of at least 1, not '0'")]
    [InlineData("--num-replicas=two", "option --num-replicas takes an integer of at least 1, not 'two'")]
    public void Echo_BadOption_NamesTheProblem(string arg, string expected)
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.echo", [arg], s_context));

        e.Message.ShouldContain(expected);
    }

    [Fact]
    public void Echo_OptionFollowedByAnotherOption_IsAMissingValue()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.echo", ["--msg", "--image", "x"], s_context));

        e.Message.ShouldContain("option --msg needs a value");
    }

    [Fact]
    public void Echo_OptionTwice_IsRefused()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("utils.echo", ["--msg", "a", "--msg", "b"], s_context));

        e.Message.ShouldContain("option --msg is given twice");
    }

    [Fact]
    public void Echo_UnderscoreSpelling_IsAccepted()
    {
        AppDef app = ComponentCatalog.Build("utils.echo", ["--num_replicas", "2"], s_context);

        app.Roles[0].NumReplicas.ShouldBe(2);
    }
}
