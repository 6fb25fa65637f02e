using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>What a node does with an item it cannot read or decode.</summary>
public enum ErrorPolicy
{
    /// <summary>Stop the pipeline with a <see cref="DataPipelineException"/> naming the file, offset or URL.</summary>
    Fail,

    /// <summary>Drop the item, count it in <see cref="NodeStats.Skipped"/>, and go on.</summary>
    Skip,
}

/// <summary>
/// One step of a data pipeline: an iterator with explicit state. A node yields items through
/// <see cref="Node{T}.TryNext"/>, can be reset to the start or to a saved state, and saves its own state on
/// demand; there is no hidden generator state.
/// </summary>
/// <remarks>
/// A node and everything upstream of it is used by one thread at a time; nodes that run work on threads of
/// their own (prefetch, parallel map) own their upstream nodes and are the only ones to touch them.
/// </remarks>
public abstract class Node : IDisposable
{
    private bool? _downstreamOfShard;

    /// <summary>Creates a node reading from <paramref name="inputs"/>.</summary>
    protected Node(string id, string type, IReadOnlyList<Node> inputs, JsonObject? parameters)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        Id = id;
        Type = type;
        Inputs = inputs;
        Parameters = parameters ?? [];
    }

    /// <summary>The node's id, unique in its graph; seeds and checkpoints are keyed by it.</summary>
    public string Id { get; }

    /// <summary>The node's type name in a graph spec ("map", "shuffle", "tar").</summary>
    public string Type { get; }

    /// <summary>The nodes this one reads from.</summary>
    public IReadOnlyList<Node> Inputs { get; }

    /// <summary>The node's parameters as they appear in a graph spec.</summary>
    public JsonObject Parameters { get; }

    /// <summary>The type of the items this node yields.</summary>
    public abstract Type ItemType { get; }

    /// <summary>Counters for finding the slow node.</summary>
    public NodeStats Stats { get; } = new();

    /// <summary>The context of the last reset.</summary>
    public PipelineContext Context { get; private set; } = new();

    /// <summary>What to do with items that cannot be read. Default: fail.</summary>
    public ErrorPolicy OnError { get; internal set; } = ErrorPolicy.Fail;

    /// <summary>True for nodes that run their upstream on threads of their own and checkpoint it themselves.</summary>
    internal virtual bool OwnsUpstream => false;

    /// <summary>True for the node that splits the data among ranks and workers.</summary>
    internal virtual bool IsShard => false;

    /// <summary>True once <see cref="Reset"/> has run.</summary>
    internal bool IsReset { get; private set; }

    /// <summary>True when a shard node is upstream: randomness here must differ per rank and worker.</summary>
    public bool IsDownstreamOfShard => _downstreamOfShard ??= Inputs.Any(i => i.IsShard || i.IsDownstreamOfShard);

    /// <summary>
    /// The seed of this node's randomness for the current context: shared by every rank and worker upstream of
    /// the shard step (so all of them see the same order and the shards stay disjoint), distinct per rank and
    /// worker after it.
    /// </summary>
    protected ulong NodeSeed => IsDownstreamOfShard
        ? DataRandom.Mix(Context.Seed, (ulong)Context.Epoch, DataRandom.StableHash(Id), 1, (ulong)Context.ShardIndex, (ulong)Context.ShardCount)
        : DataRandom.Mix(Context.Seed, (ulong)Context.Epoch, DataRandom.StableHash(Id));

    /// <summary>This node's seed for the current context (see <see cref="NodeSeed"/>), for functions built with the node.</summary>
    internal ulong Seed => NodeSeed;

    /// <summary>Resets this node alone (not its inputs) to the start, or to <paramref name="state"/>.</summary>
    internal void Reset(PipelineContext context, JsonObject? state)
    {
        Context = context;
        IsReset = true;
        try
        {
            ResetCore(state);
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException or KeyNotFoundException or NullReferenceException && state is not null)
        {
            throw new DataPipelineException($"node '{Id}' ({Type}): the saved state does not fit this node: {ex.Message}", ex);
        }
    }

    /// <summary>This node's own state (not its inputs'), or null when it has none.</summary>
    internal JsonObject? SaveState() => SaveCore();

    /// <summary>Resets the node's own position to the start (<paramref name="state"/> null) or to a saved state.</summary>
    /// <remarks>Inputs have been reset already. Nodes that own their upstream reset it here.</remarks>
    protected abstract void ResetCore(JsonObject? state);

    /// <summary>The node's own state, enough for <see cref="ResetCore"/> to continue exactly where it is now.</summary>
    protected virtual JsonObject? SaveCore() => null;

    /// <summary>Applies <see cref="OnError"/>: true means skip the item; otherwise throws naming the source.</summary>
    protected bool ShouldSkip(Exception error, string source)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (OnError == ErrorPolicy.Skip)
        {
            Stats.AddSkipped();
            return true;
        }
        if (error is DataPipelineException)
        {
            return false;
        }
        throw new DataPipelineException($"node '{Id}' ({Type}): {source}: {error.Message}", error);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases files, threads and buffers; disposing a node disposes its inputs.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (Node input in Inputs)
            {
                input.Dispose();
            }
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"{Id} ({Type}) -> {ItemType.Name}";
}

/// <summary>A node yielding items of type <typeparamref name="T"/>.</summary>
/// <typeparam name="T">The item type.</typeparam>
public abstract class Node<T> : Node
{
    /// <summary>Creates a node reading from <paramref name="inputs"/>.</summary>
    protected Node(string id, string type, IReadOnlyList<Node> inputs, JsonObject? parameters)
        : base(id, type, inputs, parameters)
    {
    }

    /// <inheritdoc />
    public override Type ItemType => typeof(T);

    /// <summary>Yields the next item; false at the end of the epoch.</summary>
    /// <remarks>The first call without a reset starts the whole upstream graph with a default context.</remarks>
    public bool TryNext(out T item)
    {
        if (!IsReset)
        {
            GraphState.Restore(this, new PipelineContext(), null);
        }
        long start = Stopwatch.GetTimestamp();
        bool produced = Produce(out item);
        Stats.Record(produced, Stopwatch.GetTimestamp() - start);
        return produced;
    }

    /// <summary>Produces the next item; false at the end of the epoch.</summary>
    protected abstract bool Produce(out T item);
}
