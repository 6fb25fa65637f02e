using Kiln.Launch.Config;

namespace Kiln.Launch.Tests;

public sealed class KilnConfigTests
{
    [Fact]
    public void Parse_SectionsKeysCommentsAndContinuations()
    {
        KilnConfig sut = KilnConfig.Parse("""
            # a comment
            [cli:run]
            scheduler = local

            [local]
            Log_Dir: /tmp/logs
            ; another comment
            [component:dist.ddp]
            j = 2x4
            env = A=1
              B=2
            """);

        sut.Get("cli:run", "scheduler").ShouldBe("local");
        sut.Get("local", "log_dir").ShouldBe("/tmp/logs");
        sut.Get("component:dist.ddp", "j").ShouldBe("2x4");
        sut.Get("component:dist.ddp", "env").ShouldBe("A=1\nB=2");
        sut.Section("missing").ShouldBeEmpty();
        sut.Sections.Keys.ShouldBe(["cli:run", "local", "component:dist.ddp"], ignoreOrder: true);
    }

    [Theory]
    [InlineData("key = value", "comes before any [section]")]
    [InlineData("[local\nx = 1", "is not a section header")]
    [InlineData("[local]\njust words", "is neither a [section] nor key = value")]
    public void Parse_Malformed_NamesTheLine(string text, string message)
    {
        LaunchException error = Should.Throw<LaunchException>(() => KilnConfig.Parse(text, "cfg"));
        error.Message.ShouldContain(message);
        error.Message.ShouldStartWith("cfg:");
    }

    [Fact]
    public void Load_UserOverridesProject_AndKilnconfigReplacesBoth()
    {
        string root = Path.Combine(Path.GetTempPath(), "kiln-config-" + Guid.NewGuid().ToString("N")[..8]);
        string home = Path.Combine(root, "home");
        string project = Path.Combine(root, "project");
        Directory.CreateDirectory(home);
        Directory.CreateDirectory(project);
        try
        {
            File.WriteAllText(Path.Combine(project, ".kilnconfig"), "[local]\nlog_dir = project\ncancel_grace = 3\n[cli:run]\nscheduler = local\n");
            File.WriteAllText(Path.Combine(home, ".kilnconfig"), "[local]\nlog_dir = user\n");
            string only = Path.Combine(root, "only.ini");
            File.WriteAllText(only, "[local]\nlog_dir = only\n");
            var env = new Dictionary<string, string?> { ["HOME"] = home };

            KilnConfig merged = KilnConfig.Load(project, k => env.GetValueOrDefault(k));
            merged.Get("local", "log_dir").ShouldBe("user");
            merged.Get("local", "cancel_grace").ShouldBe("3");
            merged.Get("cli:run", "scheduler").ShouldBe("local");
            merged.Files.Count.ShouldBe(2);

            env["KILNCONFIG"] = only;
            KilnConfig alone = KilnConfig.Load(project, k => env.GetValueOrDefault(k));
            alone.Get("local", "log_dir").ShouldBe("only");
            alone.Get("local", "cancel_grace").ShouldBeNull();

            env["KILNCONFIG"] = Path.Combine(root, "missing.ini");
            Should.Throw<LaunchException>(() => KilnConfig.Load(project, k => env.GetValueOrDefault(k))).Message.ShouldContain("does not exist");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }
}
