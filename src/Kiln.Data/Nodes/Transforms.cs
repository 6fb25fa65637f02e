using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>Applies a function to every item.</summary>
internal sealed class MapNode<TIn, TOut> : Node<TOut>
{
    private readonly Node<TIn> _input;
    private readonly Func<TIn, long, TOut> _map;
    private long _index;

    public MapNode(string id, Node<TIn> input, Func<TIn, TOut> map, JsonObject? parameters, string type = "map")
        : this(id, input, (x, _) => map(x), parameters, type)
    {
    }

    /// <summary>A map whose function also gets the item's index in the epoch (for per-sample randomness).</summary>
    public MapNode(string id, Node<TIn> input, Func<TIn, long, TOut> map, JsonObject? parameters, string type)
        : base(id, type, [input], parameters)
    {
        (_input, _map) = (input, map);
    }

    protected override bool Produce(out TOut item)
    {
        while (_input.TryNext(out TIn value))
        {
            try
            {
                item = _map(value, _index++);
                return true;
            }
            catch (Exception ex) when (ex is not DataPipelineException)
            {
                // Throws the error, named, unless on_error is skip (filters must not throw, so this is a catch).
                ShouldSkip(ex, Describe(value));
            }
        }
        item = default!;
        return false;
    }

    protected override void ResetCore(JsonObject? state) => _index = state?["index"]?.GetValue<long>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["index"] = _index };

    internal static string Describe(TIn value) => value switch
    {
        ISourced s => s.Source,
        string s => s,
        _ => "an item",
    };
}

/// <summary>Keeps the items a predicate accepts.</summary>
internal sealed class FilterNode<T> : Node<T>
{
    private readonly Node<T> _input;
    private readonly Func<T, bool> _keep;

    public FilterNode(string id, Node<T> input, Func<T, bool> keep, JsonObject? parameters)
        : base(id, "filter", [input], parameters)
    {
        (_input, _keep) = (input, keep);
    }

    protected override bool Produce(out T item)
    {
        while (_input.TryNext(out item))
        {
            if (_keep(item))
            {
                return true;
            }
        }
        return false;
    }

    protected override void ResetCore(JsonObject? state)
    {
    }
}

/// <summary>Yields the first <c>count</c> items.</summary>
internal sealed class TakeNode<T> : Node<T>
{
    private readonly Node<T> _input;
    private readonly long _count;
    private long _taken;

    public TakeNode(string id, Node<T> input, long count, JsonObject? parameters)
        : base(id, "take", [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        (_input, _count) = (input, count);
    }

    protected override bool Produce(out T item)
    {
        if (_taken >= _count || !_input.TryNext(out item))
        {
            item = default!;
            return false;
        }
        _taken++;
        return true;
    }

    protected override void ResetCore(JsonObject? state) => _taken = state?["taken"]?.GetValue<long>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["taken"] = _taken };
}

/// <summary>Keeps the items of this rank and worker: item i goes to shard i mod (ranks × workers).</summary>
/// <remarks>
/// Randomness upstream of this node is seeded the same on every rank and worker, so every copy sees the
/// same order and the shards are disjoint and together complete; randomness downstream differs per copy.
/// </remarks>
internal sealed class ShardNode<T> : Node<T>
{
    private readonly Node<T> _input;
    private long _index;

    public ShardNode(string id, Node<T> input, JsonObject? parameters)
        : base(id, "shard", [input], parameters)
    {
        _input = input;
    }

    internal override bool IsShard => true;

    protected override bool Produce(out T item)
    {
        int count = Context.ShardCount, mine = Context.ShardIndex;
        while (_input.TryNext(out item))
        {
            long index = _index++;
            if (index % count == mine)
            {
                return true;
            }
        }
        return false;
    }

    protected override void ResetCore(JsonObject? state) => _index = state?["index"]?.GetValue<long>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["index"] = _index };
}

/// <summary>Repeats its input: when the input ends it starts over, up to <c>times</c> passes (0: forever).</summary>
internal sealed class CycleNode<T> : Node<T>
{
    private readonly Node<T> _input;
    private readonly long _times;
    private long _pass;
    private bool _anyInPass;

    public CycleNode(string id, Node<T> input, long times, JsonObject? parameters)
        : base(id, "cycle", [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(times);
        (_input, _times) = (input, times);
    }

    protected override bool Produce(out T item)
    {
        while (_times == 0 || _pass < _times)
        {
            if (_input.TryNext(out item))
            {
                _anyInPass = true;
                return true;
            }
            if (!_anyInPass)
            {
                break; // an empty input would cycle forever
            }
            _pass++;
            _anyInPass = false;
            if (_times == 0 || _pass < _times)
            {
                GraphState.Restore(_input, Context, null);
            }
        }
        item = default!;
        return false;
    }

    protected override void ResetCore(JsonObject? state)
    {
        _pass = state?["pass"]?.GetValue<long>() ?? 0;
        _anyInPass = state?["any"]?.GetValue<bool>() ?? false;
    }

    protected override JsonObject? SaveCore() => new() { ["pass"] = _pass, ["any"] = _anyInPass };
}
