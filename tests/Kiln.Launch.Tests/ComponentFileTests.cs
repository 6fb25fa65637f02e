using Kiln.Launch.Components;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

public sealed class ComponentFileTests : IDisposable
{
    private const string TrainYaml = """
        # A user component: two roles, typed parameters.
        name: train-{{model}}
        description: Trains a model with a parameter server.
        params:
          - name: model
            type: string
            required: true
            help: which model
          - name: lr
            type: float
            default: 0.1
          - name: nodes
            type: int
            default: 2
          - name: fp16
            type: bool
          - name: tags
            type: list
            default: [a, b]
          - name: extra
            type: list
            remainder: true
        roles:
          - name: trainer
            entrypoint: "{{kiln}}"
            image: "{{cwd}}"
            args: [agent, --nnodes, "{{nodes}}", --, ./train, --lr, "{{lr}}", "--fp16={{fp16}}", "{{tags}}", "{{extra}}"]
            env:
              TAGS: "{{tags}}"
              MODEL: "{{model}}"
            num_replicas: "{{nodes}}"
            min_replicas: 1
            resource: {cpu: 4, gpu: 1, memMB: 2048}
            max_retries: 2
            retry_policy: replica
            port_map: {c10d: 29500}
            mounts:
              - {src: /data, dst: /mnt/data, readonly: true}
          - name: ps
            entrypoint: /usr/bin/ps-server
            resource: cpu.small
        metadata:
          team: "{{model}}-team"
        """;

    private const string TrainJson = """
        {
          // comments and trailing commas are allowed
          "params": [
            { "name": "steps", "type": "int", "default": 100, "help": "training steps" },
            { "name": "data", "required": true },
          ],
          "roles": [
            { "name": "worker", "entrypoint": "/bin/echo", "args": ["--steps", "{{ steps }}", "--data={{data}}"], "num_replicas": 2 }
          ]
        }
        """;

    private readonly string _root = Directory.CreateTempSubdirectory("kiln-components-").FullName;

    public void Dispose() => Directory.Delete(_root, recursive: true);

    private ComponentContext Context => new(_root, "/opt/kiln/kiln") { GetEnvironmentVariable = _ => null };

    private string Write(string relative, string text)
    {
        string path = Path.Combine(_root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void Build_YamlByPath_SubstitutesParametersIntoEveryField()
    {
        Write("train.yaml", TrainYaml);

        AppDef app = ComponentCatalog.Build("./train.yaml", ["--model", "bert", "--fp16", "--", "x", "y"], Context);

        app.Name.ShouldBe("train-bert");
        app.Metadata.ShouldBe(new Dictionary<string, string> { ["team"] = "bert-team" });
        app.Roles.Count.ShouldBe(2);
        Role trainer = app.Roles[0];
        trainer.Entrypoint.ShouldBe("/opt/kiln/kiln");
        trainer.Image.ShouldBe(_root);
        trainer.Args.ShouldBe(["agent", "--nnodes", "2", "--", "./train", "--lr", "0.1", "--fp16=true", "a", "b", "x", "y"]);
        trainer.Env.ShouldBe(new Dictionary<string, string> { ["TAGS"] = "a,b", ["MODEL"] = "bert" });
        trainer.NumReplicas.ShouldBe(2);
        trainer.MinReplicas.ShouldBe(1);
        trainer.Resource.ShouldBe(new Resource(4, 1, 2048));
        trainer.MaxRetries.ShouldBe(2);
        trainer.RetryPolicy.ShouldBe(RetryPolicy.Replica);
        trainer.PortMap.ShouldBe(new Dictionary<string, int> { ["c10d"] = 29500 });
        trainer.Mounts.ShouldBe([new Mount("/data", "/mnt/data", ReadOnly: true)]);
        Role ps = app.Roles[1];
        ps.Entrypoint.ShouldBe("/usr/bin/ps-server");
        ps.Resource.ShouldBe(new Resource(2, 0, 4096));
        ps.Args.ShouldBeEmpty();
    }

    [Fact]
    public void Build_YamlOptions_OverrideDefaults()
    {
        Write("train.yaml", TrainYaml);

        Role trainer = ComponentCatalog.Build("train.yaml", ["--model", "gpt", "--lr", "3e-4", "--nodes", "4", "--tags", "x,y,z"], Context).Roles[0];

        trainer.Args.ShouldBe(["agent", "--nnodes", "4", "--", "./train", "--lr", "3e-4", "--fp16=false", "x", "y", "z"]);
        trainer.NumReplicas.ShouldBe(4);
    }

    [Fact]
    public void Build_RequiredParameterMissing_NamesIt()
    {
        Write("train.yaml", TrainYaml);

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("./train.yaml", [], Context));

        e.Message.ShouldStartWith("component ./train.yaml: option --model is required");
        e.Message.ShouldContain("usage: kiln run ./train.yaml --model STRING");
    }

    [Theory]
    [InlineData("--lr", "fast", "option --lr is a float, not 'fast'")]
    [InlineData("--nodes", "2.5", "option --nodes is an int, not '2.5'")]
    [InlineData("--fp16=maybe", null, "option --fp16 is true or false, not 'maybe'")]
    [InlineData("--nodes", "0", "roles[0].num_replicas is a whole number of at least 1, not '0'")]
    public void Build_WrongType_NamesTheOptionAndValue(string option, string? value, string expected)
    {
        Write("train.yaml", TrainYaml);
        string[] args = value is null ? ["--model", "m", option] : ["--model", "m", option, value];

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("./train.yaml", args, Context));

        e.Message.ShouldContain(expected);
    }

    [Fact]
    public void Build_JsonFoundByNameInDotKiln_UsesDefaultsAndKilnconfig()
    {
        Write(".kiln/components/steps.json", TrainJson);
        ComponentContext context = Context with
        {
            ConfigSections = new Dictionary<string, IReadOnlyDictionary<string, string>>
            {
                ["component:steps"] = new Dictionary<string, string> { ["steps"] = "7", ["data"] = "/cfg" },
            },
        };

        AppDef plain = ComponentCatalog.Build("steps", ["--data", "/d"], Context);
        AppDef configured = ComponentCatalog.Build("steps", [], context);
        AppDef cliWins = ComponentCatalog.Build("steps", ["--steps", "9"], context);

        plain.Name.ShouldBe("steps");
        plain.Roles[0].Args.ShouldBe(["--steps", "100", "--data=/d"]);
        plain.Roles[0].NumReplicas.ShouldBe(2);
        configured.Roles[0].Args.ShouldBe(["--steps", "7", "--data=/cfg"]);
        cliWins.Roles[0].Args.ShouldBe(["--steps", "9", "--data=/cfg"]);
    }

    [Fact]
    public void Build_JsonRequiredMissing_NamesIt()
    {
        Write(".kiln/components/steps.json", TrainJson);

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("steps", [], Context));

        e.Message.ShouldContain("option --data is required");
    }

    [Fact]
    public void Build_PositionalArgumentsWithoutARemainderParameter_AreRefused()
    {
        Write(".kiln/components/steps.json", TrainJson);

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("steps", ["--data", "d", "--", "x"], Context));

        e.Message.ShouldContain("unexpected argument 'x'");
    }

    [Theory]
    [InlineData("params: [{name: lr, type: float, default: abc}]\nroles: [{name: r, entrypoint: e}]", "params[0]: the default of parameter 'lr', 'abc', is not a float")]
    [InlineData("params: [{name: lr, type: decimal}]\nroles: [{name: r, entrypoint: e}]", "parameter 'lr' has type 'decimal'")]
    [InlineData("roles: [{name: r, entrypoint: e, args: ['{{nope}}']}]", "roles[0].args[0]: '{{nope}}' is not a declared parameter")]
    [InlineData("roles: [{name: r, entrypoint: e, replicas: 2}]", "roles[0] has an unknown key 'replicas'")]
    [InlineData("roles: [{name: r}]", "roles[0] (r) has no entrypoint")]
    [InlineData("description: x", "has no roles")]
    [InlineData("roles: [{name: r, entrypoint: e, args: {a: b}}]", "roles[0].args is a list")]
    [InlineData("roles: [{name: r, entrypoint: e]", "not valid YAML")]
    [InlineData("- a\n- b", "the file is a mapping")]
    [InlineData("params: {lr: {type: float}, lr2: {name: x}}\nroles: [{name: r, entrypoint: e}]", "params.lr2: the name is the key")]
    public void Build_MalformedFile_NamesTheFileAndThePlace(string yaml, string expected)
    {
        Write("bad.yaml", yaml);

        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("./bad.yaml", [], Context));

        e.Message.ShouldContain("bad.yaml");
        e.Message.ShouldContain(expected);
    }

    [Fact]
    public void Build_ParametersAsAMapping_AreAccepted()
    {
        Write("map.yml", "params:\n  msg: {default: hi}\n  n: {type: int, default: 3}\nroles:\n  - {name: r, entrypoint: /bin/echo, args: ['{{msg}}'], num_replicas: '{{n}}'}\n");

        AppDef app = ComponentCatalog.Build("map.yml", ["--msg", "yo"], Context);

        app.Name.ShouldBe("map");
        app.Roles[0].Args.ShouldBe(["yo"]);
        app.Roles[0].NumReplicas.ShouldBe(3);
    }

    [Fact]
    public void Build_MissingFile_SaysWhereItLooked()
    {
        LaunchException e = Should.Throw<LaunchException>(() => ComponentCatalog.Build("./absent.yaml", [], Context));

        e.Message.ShouldContain("component file ./absent.yaml not found");
        e.Message.ShouldContain(Path.Combine(_root, "absent.yaml"));
    }

    [Fact]
    public void BuiltIns_ListsFilesInDotKiln_AndUnreadableOnesWithTheirProblem()
    {
        Write(".kiln/components/steps.json", TrainJson);
        Write(".kiln/components/train.yaml", TrainYaml);
        Write(".kiln/components/broken.yml", "roles: 3");

        IReadOnlyList<ComponentInfo> all = ComponentCatalog.BuiltIns(Context);

        // Components other tests register (test.*) may appear between the built-ins and the files.
        all.Select(c => c.Name).Where(n => !n.StartsWith("test.", StringComparison.Ordinal))
            .ShouldBe(["dist.ddp", "utils.binary", "utils.echo", "utils.sh", "broken", "steps", "train"]);
        all.Single(c => c.Name == "train").Description.ShouldBe("Trains a model with a parameter server.");
        all.Single(c => c.Name == "train").Usage.ShouldContain("--model STRING");
        all.Single(c => c.Name == "broken").Description.ShouldStartWith("cannot be read: ");
    }
}
