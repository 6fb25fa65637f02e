using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>Options and helpers the built-in components share.</summary>
internal static class CommonOptions
{
    public static OptionSpec Image { get; } = OptionSpec.Value("image", "DIR", "working folder (local schedulers) or container image", "");

    public static OptionSpec NumReplicas { get; } = OptionSpec.Value("num-replicas", "N", "how many replicas run", "1");

    public static OptionSpec Env { get; } = OptionSpec.List("env", "K=V,…", "environment variables for every replica");

    public static OptionSpec MaxRetries { get; } = OptionSpec.Value("max-retries", "N", "restarts of the app the scheduler may make after a failure", "0");

    public static OptionSpec NamedResource { get; } = OptionSpec.Value("h", "RESOURCE", "named resource (cpu.small, gpu.small, … or [resource:NAME] in .kilnconfig); --cpu/--gpu/--memMB override its parts");

    public static OptionSpec Cpu(int defaultValue) => OptionSpec.Value("cpu", "N", "CPU cores per replica", defaultValue.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static OptionSpec Gpu(int defaultValue) => OptionSpec.Value("gpu", "N", "GPUs per replica", defaultValue.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public static OptionSpec MemMB(int defaultValue) => OptionSpec.Value("memMB", "MIB", "memory per replica in MiB", defaultValue.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The resource from <c>-h</c>, with <c>--cpu</c>, <c>--gpu</c>, <c>--memMB</c> given explicitly (or without <c>-h</c>: their defaults) on top.</summary>
    public static Resource Resource(ComponentArguments parsed, ComponentSyntax syntax, ComponentContext context)
    {
        string? named = parsed.Value("h");
        if (named is null)
        {
            return new Resource(parsed.Int("cpu", 0)!.Value, parsed.Int("gpu", 0)!.Value, parsed.Int("memMB", 1)!.Value);
        }
        Resource resource = NamedResources.Get(named, context, syntax);
        return new Resource(
            parsed.IsGiven("cpu") ? parsed.Int("cpu", 0)!.Value : resource.Cpu,
            parsed.IsGiven("gpu") ? parsed.Int("gpu", 0)!.Value : resource.Gpu,
            parsed.IsGiven("memMB") ? parsed.Int("memMB", 1)!.Value : resource.MemMB);
    }
}

/// <summary><c>utils.echo</c>: prints a message (TorchX's <c>utils.echo</c>).</summary>
internal sealed class EchoComponent : IComponent
{
    private static readonly ComponentSyntax s_syntax = new(
        "utils.echo",
        [
            OptionSpec.Value("msg", "TEXT", "the message to print", "hello world"),
            CommonOptions.Image,
            CommonOptions.NumReplicas,
        ],
        Rest: null);

    public string Name => s_syntax.Component;

    public string Description => "Prints a message with /bin/echo (a smoke test for a scheduler).";

    public string Usage => s_syntax.Usage;

    public AppDef Build(IReadOnlyList<string> args, ComponentContext context)
    {
        ComponentArguments parsed = s_syntax.Parse(args, context);
        return new AppDef
        {
            Name = "echo",
            Roles =
            [
                new Role
                {
                    Name = "echo",
                    Entrypoint = "/bin/echo",
                    Image = parsed.Value("image")!,
                    Args = [parsed.Value("msg")!],
                    NumReplicas = parsed.Int("num-replicas", 1)!.Value,
                },
            ],
        };
    }
}

/// <summary><c>utils.sh</c>: runs a shell command line with <c>/bin/sh -c</c> (TorchX's <c>utils.sh</c>).</summary>
internal sealed class ShComponent : IComponent
{
    private static readonly ComponentSyntax s_syntax = new(
        "utils.sh",
        [
            CommonOptions.Image,
            CommonOptions.NumReplicas,
            CommonOptions.NamedResource,
            CommonOptions.Cpu(1),
            CommonOptions.Gpu(0),
            CommonOptions.MemMB(1024),
            CommonOptions.Env,
            CommonOptions.MaxRetries,
        ],
        Rest: "COMMAND…");

    public string Name => s_syntax.Component;

    public string Description => "Runs a shell command line with /bin/sh -c (the words after -- joined by spaces).";

    public string Usage => s_syntax.Usage;

    public AppDef Build(IReadOnlyList<string> args, ComponentContext context)
    {
        ComponentArguments parsed = s_syntax.Parse(args, context);
        if (parsed.Rest.Count == 0 || parsed.Rest.All(string.IsNullOrWhiteSpace))
        {
            throw s_syntax.Error("no command given (put it after --, e.g. kiln run utils.sh -- 'echo $HOSTNAME')");
        }
        return new AppDef
        {
            Name = "sh",
            Roles =
            [
                new Role
                {
                    Name = "sh",
                    Entrypoint = "/bin/sh",
                    Image = parsed.Value("image")!,
                    Args = ["-c", string.Join(' ', parsed.Rest)],
                    Env = parsed.KeyValues("env"),
                    NumReplicas = parsed.Int("num-replicas", 1)!.Value,
                    MaxRetries = parsed.Int("max-retries", 0)!.Value,
                    Resource = CommonOptions.Resource(parsed, s_syntax, context),
                },
            ],
        };
    }
}

/// <summary><c>utils.binary</c>: runs a program with arguments (TorchX's <c>utils.binary</c>).</summary>
internal sealed class BinaryComponent : IComponent
{
    private static readonly ComponentSyntax s_syntax = new(
        "utils.binary",
        [
            OptionSpec.Value("entrypoint", "PATH", "the program to run (a path, or a name on PATH)", required: true),
            OptionSpec.Value("name", "NAME", "the app's and role's name", "binary"),
            CommonOptions.Image,
            CommonOptions.NumReplicas,
            CommonOptions.Env,
            CommonOptions.MaxRetries,
        ],
        Rest: "ARGS…");

    public string Name => s_syntax.Component;

    public string Description => "Runs a program with the arguments after --.";

    public string Usage => s_syntax.Usage;

    public AppDef Build(IReadOnlyList<string> args, ComponentContext context)
    {
        ComponentArguments parsed = s_syntax.Parse(args, context);
        string entrypoint = parsed.Value("entrypoint")!;
        if (string.IsNullOrWhiteSpace(entrypoint))
        {
            throw s_syntax.Error("option --entrypoint is empty");
        }
        string name = parsed.Value("name")!;
        return new AppDef
        {
            Name = name,
            Roles =
            [
                new Role
                {
                    Name = name,
                    Entrypoint = entrypoint,
                    Image = parsed.Value("image")!,
                    Args = [.. parsed.Rest],
                    Env = parsed.KeyValues("env"),
                    NumReplicas = parsed.Int("num-replicas", 1)!.Value,
                    MaxRetries = parsed.Int("max-retries", 0)!.Value,
                },
            ],
        };
    }
}
