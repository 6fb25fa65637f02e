using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>Groups items into arrays of <c>size</c>; the last, shorter one is dropped when <c>drop_last</c>.</summary>
internal sealed class BatchNode<T> : Node<T[]>
{
    private readonly int _size;
    private readonly bool _dropLast;
    private readonly ReplayBuffer<T> _reader;
    private readonly List<T> _partial = [];
    private long _firstRead;

    public BatchNode(string id, Node<T> input, int size, bool dropLast, JsonObject? parameters)
        : base(id, "batch", [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        (_size, _dropLast) = (size, dropLast);
        _reader = new ReplayBuffer<T>(input, size);
    }

    protected override bool Produce(out T[] item)
    {
        while (_partial.Count < _size && _reader.TryRead(out T value, out long read))
        {
            if (_partial.Count == 0)
            {
                _firstRead = read;
                _reader.Prune(read);
            }
            _partial.Add(value);
        }
        if (_partial.Count == 0 || (_partial.Count < _size && _dropLast))
        {
            _partial.Clear();
            item = [];
            return false;
        }
        item = [.. _partial];
        _partial.Clear();
        return true;
    }

    protected override void ResetCore(JsonObject? state)
    {
        _partial.Clear();
        _reader.Restore(state, Context, (_, value) => _partial.Add(value));
        _firstRead = state?["from"]?.GetValue<long>() ?? 0;
    }

    protected override JsonObject? SaveCore() => _reader.Save(_firstRead, _partial.Count > 0);
}

/// <summary>Yields the items of each array it reads, one by one.</summary>
internal sealed class FlatMapNode<TIn, TOut> : Node<TOut>
{
    private readonly Func<TIn, IEnumerable<TOut>> _expand;
    private readonly ReplayBuffer<TIn> _reader;
    private IEnumerator<TOut>? _current;
    private long _currentRead;
    private long _index;
    private string _currentSource = "";

    public FlatMapNode(string id, Node<TIn> input, Func<TIn, IEnumerable<TOut>> expand, JsonObject? parameters, string type = "flat_map")
        : base(id, type, [input], parameters)
    {
        _expand = expand;
        _reader = new ReplayBuffer<TIn>(input, 1);
    }

    protected override bool Produce(out TOut item)
    {
        while (true)
        {
            try
            {
                if (_current is not null && _current.MoveNext())
                {
                    _index++;
                    item = _current.Current;
                    return true;
                }
            }
            catch (Exception ex) when (ex is not DataPipelineException)
            {
                // Throws the error, named, unless on_error is skip, which drops the rest of this input item.
                ShouldSkip(ex, _currentSource);
            }
            _current?.Dispose();
            _current = null;
            if (!_reader.TryRead(out TIn value, out long read))
            {
                item = default!;
                return false;
            }
            _reader.Prune(read);
            (_current, _currentRead, _index, _currentSource) = (_expand(value).GetEnumerator(), read, 0, MapNode<TIn, TOut>.Describe(value));
        }
    }

    protected override void ResetCore(JsonObject? state)
    {
        _current?.Dispose();
        _current = null;
        _index = 0;
        _reader.Restore(state, Context, (read, value) => (_current, _currentRead, _currentSource) = (_expand(value).GetEnumerator(), read, MapNode<TIn, TOut>.Describe(value)));
        long skip = state?["index"]?.GetValue<long>() ?? 0;
        for (; _index < skip; _index++)
        {
            if (_current is null || !_current.MoveNext())
            {
                throw new DataPipelineException($"node '{Id}': the saved position is past the end of its current item");
            }
        }
    }

    protected override JsonObject? SaveCore()
    {
        JsonObject state = _reader.Save(_currentRead, _current is not null);
        state["index"] = _index;
        return state;
    }
}

/// <summary>Shuffles the items inside each batch, with this node's seed.</summary>
internal sealed class InBatchShuffleNode<T> : Node<T[]>
{
    private readonly Node<T[]> _input;
    private DataRandom _random = new(0);

    public InBatchShuffleNode(string id, Node<T[]> input, JsonObject? parameters)
        : base(id, "in_batch_shuffle", [input], parameters)
    {
        _input = input;
    }

    protected override bool Produce(out T[] item)
    {
        if (!_input.TryNext(out T[] batch))
        {
            item = [];
            return false;
        }
        item = [.. batch];
        for (int i = item.Length - 1; i > 0; i--)
        {
            int j = _random.NextInt(i + 1);
            (item[i], item[j]) = (item[j], item[i]);
        }
        return true;
    }

    protected override void ResetCore(JsonObject? state) =>
        _random = state?["random"] is { } saved ? DataRandom.Load(saved) : new DataRandom(NodeSeed);

    protected override JsonObject? SaveCore() => new() { ["random"] = _random.Save() };
}

/// <summary>
/// Batches items of similar length: each item goes to the bucket whose upper bound its length does not
/// exceed; a bucket that fills yields a batch. At the end, partial buckets yield unless <c>drop_last</c>.
/// </summary>
internal sealed class BucketBatchNode<T> : Node<T[]>
{
    private readonly int _size;
    private readonly bool _dropLast;
    private readonly Func<T, int> _length;
    private readonly int[] _bounds;
    private readonly ReplayBuffer<T> _reader;
    private readonly List<(long Read, T Item)>[] _buckets;
    private int _flushing;

    public BucketBatchNode(string id, Node<T> input, int size, int[] bounds, bool dropLast, Func<T, int> length, JsonObject? parameters)
        : base(id, "bucket_batch", [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        (_size, _bounds, _dropLast, _length) = (size, bounds, dropLast, length);
        _buckets = [.. Enumerable.Range(0, bounds.Length + 1).Select(_ => new List<(long, T)>())];
        _reader = new ReplayBuffer<T>(input, size);
    }

    protected override bool Produce(out T[] item)
    {
        while (_reader.TryRead(out T value, out long read))
        {
            List<(long Read, T Item)> bucket = _buckets[BucketOf(value)];
            bucket.Add((read, value));
            if (bucket.Count == _size)
            {
                item = [.. bucket.Select(b => b.Item)];
                bucket.Clear();
                _reader.Prune(OldestHeld());
                return true;
            }
        }
        for (; _flushing < _buckets.Length; _flushing++)
        {
            List<(long Read, T Item)> bucket = _buckets[_flushing];
            if (bucket.Count > 0 && !_dropLast)
            {
                item = [.. bucket.Select(b => b.Item)];
                bucket.Clear();
                return true;
            }
            bucket.Clear();
        }
        item = [];
        return false;
    }

    private int BucketOf(T value)
    {
        int length = _length(value);
        int i = Array.FindIndex(_bounds, b => length <= b);
        return i < 0 ? _bounds.Length : i;
    }

    private long OldestHeld()
    {
        long oldest = long.MaxValue;
        foreach (List<(long Read, T Item)> bucket in _buckets)
        {
            if (bucket.Count > 0)
            {
                oldest = Math.Min(oldest, bucket[0].Read);
            }
        }
        return oldest == long.MaxValue ? _reader.Reads : oldest;
    }

    protected override void ResetCore(JsonObject? state)
    {
        foreach (List<(long Read, T Item)> bucket in _buckets)
        {
            bucket.Clear();
        }
        var held = new HashSet<long>(state?["held"]?.AsArray().Select(n => n!.GetValue<long>()) ?? []);
        _reader.Restore(state, Context, (read, value) =>
        {
            if (held.Contains(read))
            {
                _buckets[BucketOf(value)].Add((read, value));
            }
        });
        _flushing = state?["flushing"]?.GetValue<int>() ?? 0;
    }

    protected override JsonObject? SaveCore()
    {
        bool any = _buckets.Any(b => b.Count > 0);
        JsonObject state = _reader.Save(OldestHeld(), any);
        state["held"] = new JsonArray([.. _buckets.SelectMany(b => b).Select(b => (JsonNode)b.Read)]);
        state["flushing"] = _flushing;
        return state;
    }
}
