using System.Text.Json.Nodes;
using Kiln.Data.Nodes;

namespace Kiln.Data;

/// <summary>Who reads the data and how: the seed, this rank among the world, worker copies per rank.</summary>
public sealed class DataLoaderOptions
{
    /// <summary>The run's seed. Default: 0.</summary>
    public ulong Seed { get; set; }

    /// <summary>This process's rank. Default: 0.</summary>
    public int Rank { get; set; }

    /// <summary>How many ranks read together. Default: 1.</summary>
    public int WorldSize { get; set; } = 1;

    /// <summary>
    /// Copies of the graph this rank runs, each on a thread of its own, read in turn. Default: 1 (the graph
    /// runs on the caller's thread; nodes with threads of their own still use them).
    /// </summary>
    public int Workers { get; set; } = 1;

    /// <summary>Items each worker copy may run ahead of the consumer. Default: 2.</summary>
    public int WorkerPrefetch { get; set; } = 2;
}

/// <summary>
/// Runs a graph epoch by epoch: one copy on the caller's thread, or several worker copies on threads of
/// their own, taken in turn. Its state — saved at any item, mid-epoch included — restores in a new process
/// to yield exactly the items an uninterrupted run would have yielded next.
/// </summary>
/// <typeparam name="T">The item type the graph yields.</typeparam>
/// <remarks>Used by one thread at a time. Dispose it to stop the worker threads.</remarks>
public sealed class DataLoader<T> : IDisposable
{
    private const int StateVersion = 1;
    private readonly DataGraph _graph;
    private readonly DataLoaderOptions _options;
    private readonly Node<T>[] _workers;
    private bool[] _done;
    private int _next;

    /// <summary>Creates the loader; nothing runs until <see cref="StartEpoch"/> or <see cref="LoadState"/>.</summary>
    public DataLoader(DataGraph graph, DataLoaderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        _graph = graph;
        _options = options ?? new DataLoaderOptions();
        Context(0, 0).Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.WorkerPrefetch, 1);
        _workers = new Node<T>[_options.Workers];
        for (int i = 0; i < _workers.Length; i++)
        {
            Node<T> root = graph.CreateRoot<T>();
            _workers[i] = _options.Workers == 1
                ? root
                : new ParallelMapNode<T, T>($"worker{i}", root, static x => x, 1, true, _options.WorkerPrefetch, 1, null, "worker");
        }
        _done = new bool[_workers.Length];
        DataMetrics.Track(_workers);
    }

    /// <summary>The current epoch.</summary>
    public int Epoch { get; private set; } = -1;

    /// <summary>The root node of each worker copy, for their counters.</summary>
    public IReadOnlyList<Node> Roots => _workers;

    /// <summary>Starts (or restarts) an epoch from its first item.</summary>
    public void StartEpoch(int epoch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        Epoch = epoch;
        for (int i = 0; i < _workers.Length; i++)
        {
            GraphState.Restore(_workers[i], Context(epoch, i), null);
        }
        _done = new bool[_workers.Length];
        _next = 0;
    }

    /// <summary>The next item of the epoch; false when the epoch has ended.</summary>
    public bool TryNext(out T item)
    {
        if (Epoch < 0)
        {
            StartEpoch(0);
        }
        for (int tried = 0; tried < _workers.Length; tried++)
        {
            int i = _next;
            _next = (_next + 1) % _workers.Length;
            if (_done[i])
            {
                continue;
            }
            if (_workers[i].TryNext(out item))
            {
                return true;
            }
            _done[i] = true;
        }
        item = default!;
        return false;
    }

    /// <summary>The rest of the current epoch.</summary>
    public IEnumerable<T> ReadToEnd()
    {
        while (TryNext(out T item))
        {
            yield return item;
        }
    }

    /// <summary>The loader's state: where every worker copy is, which one is next, the epoch and the graph.</summary>
    public JsonObject SaveState()
    {
        if (Epoch < 0)
        {
            StartEpoch(0);
        }
        return SaveStarted();
    }

    private JsonObject SaveStarted() => new()
    {
        ["version"] = StateVersion,
        ["graph"] = _graph.Spec.Hash(),
        ["epoch"] = Epoch,
        ["seed"] = _options.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["rank"] = _options.Rank,
        ["world_size"] = _options.WorldSize,
        ["workers"] = _workers.Length,
        ["next"] = _next,
        ["done"] = new JsonArray([.. _done.Select(d => (JsonNode)d)]),
        ["nodes"] = new JsonArray([.. _workers.Select(w => (JsonNode)GraphState.Capture(w))]),
    };

    /// <summary>Continues from a saved state.</summary>
    /// <exception cref="DataPipelineException">The state was saved from another graph, seed or topology (the message says which).</exception>
    public void LoadState(JsonObject state)
    {
        ArgumentNullException.ThrowIfNull(state);
        void Expect(string key, JsonNode? expected)
        {
            if (state[key]?.ToJsonString() != expected?.ToJsonString())
            {
                throw new DataPipelineException($"the saved state's {key} is {state[key]?.ToJsonString() ?? "missing"}, this loader's is {expected?.ToJsonString()}: it was saved from another run");
            }
        }
        Expect("version", StateVersion);
        Expect("graph", _graph.Spec.Hash());
        Expect("seed", _options.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Expect("rank", _options.Rank);
        Expect("world_size", _options.WorldSize);
        Expect("workers", _workers.Length);
        Epoch = state["epoch"]!.GetValue<int>();
        JsonArray nodes = state["nodes"]!.AsArray();
        for (int i = 0; i < _workers.Length; i++)
        {
            GraphState.Restore(_workers[i], Context(Epoch, i), nodes[i]!.AsObject());
        }
        _done = [.. state["done"]!.AsArray().Select(d => d!.GetValue<bool>())];
        _next = state["next"]!.GetValue<int>();
    }

    private PipelineContext Context(int epoch, int worker) =>
        new(_options.Seed, epoch, _options.Rank, _options.WorldSize, worker, _options.Workers);

    /// <inheritdoc />
    public void Dispose()
    {
        DataMetrics.Untrack(_workers);
        foreach (Node<T> worker in _workers)
        {
            worker.Dispose();
        }
    }
}
