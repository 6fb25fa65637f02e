using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using Kiln.Data;
using Kiln.Runtime;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln data describe|run|bench</c>: inspect and run a pipeline graph spec.</summary>
internal static class DataCommand
{
    public static Command Create()
    {
        var command = new Command("data", "Inspect, run and time data pipeline graphs (JSON specs).");
        command.Subcommands.Add(Describe());
        command.Subcommands.Add(Run());
        command.Subcommands.Add(Bench());
        return command;
    }

    private static Argument<FileInfo> SpecArgument() => new("spec") { Description = "The graph spec (JSON)." };

    private static Command Describe()
    {
        Argument<FileInfo> spec = SpecArgument();
        var command = new Command("describe", "Check a spec and print its nodes.") { spec };
        command.SetAction(async (parse, cancellationToken) =>
        {
            DataGraph? graph = Load(parse, parse.GetValue(spec)!);
            if (graph is null)
            {
                return 1;
            }
            TextWriter output = parse.InvocationConfiguration.Output;
            await output.WriteAsync(graph.Spec.Describe().AsMemory(), cancellationToken).ConfigureAwait(false);
            await output.WriteLineAsync($"yields {graph.ItemType.Name}; spec hash {graph.Spec.Hash()[..16]}".AsMemory(), cancellationToken).ConfigureAwait(false);
            return 0;
        });
        return command;
    }

    private sealed class RunOptions
    {
        public Option<long?> Take { get; } = new("--take") { Description = "Stop after this many items." };
        public Option<ulong> Seed { get; } = new("--seed") { Description = "The seed (default 0)." };
        public Option<int> Epoch { get; } = new("--epoch") { Description = "The epoch (default 0)." };
        public Option<int> Rank { get; } = new("--rank") { Description = "This rank (default 0; torchrun's RANK)." };
        public Option<int> WorldSize { get; } = new("--world-size") { Description = "Ranks reading together (default 1; torchrun's WORLD_SIZE).", DefaultValueFactory = _ => 1 };
        public Option<int> Workers { get; } = new("--workers") { Description = "Worker copies of the graph on threads of their own (default 1).", DefaultValueFactory = _ => 1 };
        public Option<Uri?> S3Endpoint { get; } = new("--s3-endpoint") { Description = "S3-compatible endpoint for s3:// locations (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; none: anonymous)." };

        public void AddTo(Command command)
        {
            command.Options.Add(S3Endpoint);
            command.Options.Add(Seed);
            command.Options.Add(Epoch);
            command.Options.Add(Rank);
            command.Options.Add(WorldSize);
            command.Options.Add(Workers);
        }

        public DataLoaderOptions Read(ParseResult parse) => new()
        {
            Seed = parse.GetValue(Seed),
            Rank = parse.GetValue(Rank),
            WorldSize = parse.GetValue(WorldSize),
            Workers = parse.GetValue(Workers),
        };
    }

    private static Command Run()
    {
        Argument<FileInfo> spec = SpecArgument();
        var options = new RunOptions();
        var stateOut = new Option<FileInfo?>("--state-out") { Description = "Write the loader's state here when the run stops (to resume later)." };
        var resume = new Option<FileInfo?>("--resume") { Description = "Continue from a state written by --state-out." };
        var command = new Command("run", "Run a graph and write one JSON line per item (bytes and tensors as size and SHA-256).") { spec, options.Take, stateOut, resume };
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (Open(parse, parse.GetValue(spec)!, options) is not { } loader)
            {
                return 1;
            }
            using (loader)
            {
                TextWriter output = parse.InvocationConfiguration.Output;
                try
                {
                    if (parse.GetValue(resume) is { } from)
                    {
                        loader.LoadState(JsonNode.Parse(await File.ReadAllTextAsync(from.FullName, cancellationToken).ConfigureAwait(false))!.AsObject());
                    }
                    else
                    {
                        loader.StartEpoch(parse.GetValue(options.Epoch));
                    }
                    long limit = parse.GetValue(options.Take) ?? long.MaxValue;
                    for (long n = 0; n < limit && !cancellationToken.IsCancellationRequested && loader.TryNext(out object? item); n++)
                    {
                        await output.WriteLineAsync(ItemJson.From(item)?.ToJsonString() ?? "null").ConfigureAwait(false);
                    }
                    if (parse.GetValue(stateOut) is { } to)
                    {
                        await File.WriteAllTextAsync(to.FullName, loader.SaveState().ToJsonString(), cancellationToken).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (ex is DataPipelineException or IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
                {
                    await parse.InvocationConfiguration.Error.WriteLineAsync($"kiln data run: {ex.Message}").ConfigureAwait(false);
                    return 1;
                }
            }
            return 0;
        });
        return command;
    }

    private static Command Bench()
    {
        Argument<FileInfo> spec = SpecArgument();
        var options = new RunOptions();
        var seconds = new Option<double>("--seconds") { Description = "Run at most this long (default 10).", DefaultValueFactory = _ => 10 };
        var command = new Command("bench", "Run a graph for a while and print items/s, MB/s and a per-node table.") { spec, seconds };
        options.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            if (Open(parse, parse.GetValue(spec)!, options) is not { } loader)
            {
                return 1;
            }
            using (loader)
            {
                TextWriter output = parse.InvocationConfiguration.Output;
                TimeSpan limit = TimeSpan.FromSeconds(parse.GetValue(seconds));
                loader.StartEpoch(parse.GetValue(options.Epoch));
                var clock = Stopwatch.StartNew();
                long items = 0;
                try
                {
                    while (clock.Elapsed < limit && !cancellationToken.IsCancellationRequested && loader.TryNext(out _))
                    {
                        items++;
                    }
                }
                catch (DataPipelineException ex)
                {
                    await parse.InvocationConfiguration.Error.WriteLineAsync($"kiln data bench: {ex.Message}").ConfigureAwait(false);
                    return 1;
                }
                double elapsed = clock.Elapsed.TotalSeconds;
                long bytes = loader.Roots.SelectMany(GraphReport.Nodes).Sum(n => n.Stats.Bytes);
                await output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"{items} items in {elapsed:F2} s: {items / elapsed:F1} items/s, {bytes / 1e6 / elapsed:F1} MB/s read")).ConfigureAwait(false);
                foreach (Node root in loader.Roots)
                {
                    await output.WriteAsync(GraphReport.Table(root).AsMemory(), cancellationToken).ConfigureAwait(false);
                }
            }
            return 0;
        });
        return command;
    }

    /// <summary>Loads the spec and makes a loader with the run options; null (after saying why) when either fails.</summary>
    private static IObjectLoader? Open(ParseResult parse, FileInfo spec, RunOptions options) =>
        Load(parse, spec, parse.GetValue(options.S3Endpoint)) is { } graph ? Loader(parse, graph, options.Read(parse)) : null;

    private static DataGraph? Load(ParseResult parse, FileInfo file, Uri? s3Endpoint = null)
    {
        try
        {
            NodeRegistry registry = NodeRegistry.CreateDefault();
            if (s3Endpoint is not null)
            {
                registry.UseS3(new Kiln.Data.Remote.S3StoreOptions
                {
                    ServiceUrl = s3Endpoint,
                    AccessKeyId = Environment.GetEnvironmentVariable("AWS_ACCESS_KEY_ID"),
                    SecretAccessKey = Environment.GetEnvironmentVariable("AWS_SECRET_ACCESS_KEY"),
                    SessionToken = Environment.GetEnvironmentVariable("AWS_SESSION_TOKEN"),
                });
            }
            return DataGraph.Build(GraphSpec.Load(file.FullName), registry, file.FullName);
        }
        catch (GraphSpecException ex)
        {
            parse.InvocationConfiguration.Error.WriteLine(ex.Message);
        }
        catch (IOException ex)
        {
            parse.InvocationConfiguration.Error.WriteLine($"kiln data: cannot read {file.FullName}: {ex.Message}");
        }
        return null;
    }

    /// <summary>A loader over the graph's item type, seen as objects.</summary>
    private static IObjectLoader? Loader(ParseResult parse, DataGraph graph, DataLoaderOptions options)
    {
        try
        {
            // The host chooses the libtorch (KILN_LIBTORCH_DIR) before a collate node first needs one.
            TorchRuntime.EnsureInitialized(TorchRuntimeOptions.FromEnvironment());
        }
        catch (KilnRuntimeException ex)
        {
            parse.InvocationConfiguration.Error.WriteLine($"kiln data: {ex.Message} (pipelines without tensors still run)");
        }
        try
        {
            Type type = typeof(ObjectLoader<>).MakeGenericType(graph.ItemType);
            return (IObjectLoader)Activator.CreateInstance(type, graph, options)!;
        }
        catch (TargetInvocationException ex) when (ex.InnerException is ArgumentException inner)
        {
            parse.InvocationConfiguration.Error.WriteLine($"kiln data: {inner.Message}");
            return null;
        }
    }

    private interface IObjectLoader : IDisposable
    {
        public IReadOnlyList<Node> Roots { get; }

        public void StartEpoch(int epoch);

        public bool TryNext(out object? item);

        public JsonObject SaveState();

        public void LoadState(JsonObject state);
    }

    private sealed class ObjectLoader<T>(DataGraph graph, DataLoaderOptions options) : IObjectLoader
    {
        private readonly DataLoader<T> _loader = new(graph, options);

        public IReadOnlyList<Node> Roots => _loader.Roots;

        public void StartEpoch(int epoch) => _loader.StartEpoch(epoch);

        public bool TryNext(out object? item)
        {
            bool got = _loader.TryNext(out T value);
            item = value;
            return got;
        }

        public JsonObject SaveState() => _loader.SaveState();

        public void LoadState(JsonObject state) => _loader.LoadState(state);

        public void Dispose() => _loader.Dispose();
    }
}
