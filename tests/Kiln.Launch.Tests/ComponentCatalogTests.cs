using Kiln.Launch.Components;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

public sealed class ComponentCatalogTests
{
    private static readonly ComponentContext s_context = new("/nonexistent-kiln-dir", "kiln");

    [Fact]
    public void Build_UnknownComponent_ListsTheBuiltIns()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.dpp", [], s_context));

        e.Message.ShouldStartWith("unknown component 'dist.dpp'; did you mean dist.ddp?; built-ins: dist.ddp, utils.binary, utils.echo, utils.sh");
    }

    [Fact]
    public void Build_UnknownComponentFarFromAny_SuggestsNothing()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("train", [], s_context));

        e.Message.ShouldStartWith("unknown component 'train'; built-ins: ");
    }

    [Fact]
    public void Build_MistypedOption_IsSuggested()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("dist.ddp", ["--max-restart", "2"], s_context));

        e.Message.ShouldContain("unknown option '--max-restart'; did you mean --max-restarts?; options: -j,");
    }

    [Fact]
    public void Context_NullConfigSections_IsRefused()
    {
        Should.Throw<ArgumentNullException>(() => s_context with { ConfigSections = null! });
    }

    [Fact]
    public void BuiltIns_WithoutUserComponents_AreTheFourWithUsage()
    {
        IReadOnlyList<ComponentInfo> all = ComponentCatalog.BuiltIns(s_context);

        all.Select(c => c.Name).Where(n => !n.StartsWith("test.", StringComparison.Ordinal)).ShouldBe(["dist.ddp", "utils.binary", "utils.echo", "utils.sh"]);
        all.ShouldAllBe(c => c.Description.Length > 0 && c.Usage.StartsWith("usage: kiln run " + c.Name, StringComparison.Ordinal));
        all.Single(c => c.Name == "dist.ddp").Usage.ShouldContain("-j [MIN:]NxM");
    }

    [Fact]
    public void Register_CSharpComponent_IsBuiltAndListed()
    {
        var component = new FixedComponent("test.fixed");
        ComponentCatalog.Register(component);
        try
        {
            AppDef app = ComponentCatalog.Build("test.fixed", ["a", "b"], s_context);

            app.Roles[0].Args.ShouldBe(["a", "b"]);
            ComponentCatalog.BuiltIns(s_context).ShouldContain(c => c.Name == "test.fixed" && c.Usage == "usage: kiln run test.fixed ARGS…");
        }
        finally
        {
            ComponentCatalog.Unregister("test.fixed");
        }
        Should.Throw<LaunchException>(() => ComponentCatalog.Build("test.fixed", [], s_context));
    }

    [Theory]
    [InlineData("dist.ddp", "built-in")]
    [InlineData("my/comp", "is not a component name")]
    [InlineData("comp.yaml", "is not a component name")]
    [InlineData("", "is not a component name")]
    public void Register_BadName_IsRefused(string name, string expected)
    {
        ArgumentException e = Should.Throw<ArgumentException>(() => ComponentCatalog.Register(new FixedComponent(name)));

        e.Message.ShouldContain(expected);
    }

    [Fact]
    public void Build_ComponentReturningAnInvalidApp_IsRefused()
    {
        ComponentCatalog.Register(new FixedComponent("test.invalid", replicas: 0));
        try
        {
            LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("test.invalid", [], s_context));

            e.Message.ShouldContain("component test.invalid: role r needs 1 <= min_replicas <= num_replicas");
        }
        finally
        {
            ComponentCatalog.Unregister("test.invalid");
        }
    }

    private sealed class FixedComponent(string name, int replicas = 1) : IComponent
    {
        public string Name => name;

        public string Description => "A test component.";

        public string Usage => $"usage: kiln run {name} ARGS…";

        public AppDef Build(IReadOnlyList<string> args, ComponentContext context) =>
            new() { Name = "fixed", Roles = [new Role { Name = "r", Entrypoint = "/bin/true", Args = [.. args], NumReplicas = replicas }] };
    }
}
