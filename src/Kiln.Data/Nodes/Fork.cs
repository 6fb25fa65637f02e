using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>
/// The shared reader behind the outputs of a fork (every output sees every item) or a demux (each item goes
/// to the output its key names). Outputs are pulled independently; items one output has not taken yet wait
/// in a queue of at most <c>buffer</c> items, beyond which the pipeline stops with an error naming the node
/// (an output that is never read would otherwise hold everything).
/// </summary>
internal sealed class ForkHub<T>
{
    private static long s_stamps;
    private readonly string _id;
    private readonly Node<T> _input;
    private readonly Func<T, int>? _route;
    private readonly int _buffer;
    private readonly ReplayBuffer<T> _reader;
    private readonly List<(long Read, T Item)>[] _queues;
    private readonly long[] _taken;
    private readonly Lock _gate = new();
    private object? _restoredFor;
    private long _restoredStamp = -1;

    public ForkHub(string id, Node<T> input, int outputs, Func<T, int>? route, int buffer)
    {
        (_id, _input, _route, _buffer) = (id, input, route, buffer);
        _reader = new ReplayBuffer<T>(input, Math.Max(1, buffer / 16));
        _queues = [.. Enumerable.Range(0, outputs).Select(_ => new List<(long, T)>())];
        _taken = new long[outputs];
    }

    public Node<T> Input => _input;

    public bool TryTake(int output, out T item)
    {
        lock (_gate)
        {
            return TakeLocked(output, out item);
        }
    }

    private bool TakeLocked(int output, out T item)
    {
        List<(long Read, T Item)> queue = _queues[output];
        while (queue.Count == 0)
        {
            if (!_reader.TryRead(out T value, out long read))
            {
                item = default!;
                return false;
            }
            if (_route is null)
            {
                foreach (List<(long Read, T Item)> q in _queues)
                {
                    q.Add((read, value));
                }
            }
            else
            {
                int target = _route(value);
                if (target < 0 || target >= _queues.Length)
                {
                    throw new DataPipelineException($"node '{_id}' (demux): the key function sent an item to output {target}; there are {_queues.Length}");
                }
                _queues[target].Add((read, value));
            }
            if (_queues.Sum(q => q.Count) > _buffer * (_route is null ? _queues.Length : 1))
            {
                throw new DataPipelineException($"node '{_id}': more than {_buffer} items wait for an output that is read too slowly (or never); raise \"buffer\" or read the outputs in step");
            }
        }
        item = queue[0].Item;
        queue.RemoveAt(0);
        _taken[output]++;
        _reader.Prune(OldestHeld());
        return true;
    }

    private long OldestHeld()
    {
        long oldest = _reader.Reads;
        foreach (List<(long Read, T Item)> q in _queues)
        {
            if (q.Count > 0)
            {
                oldest = Math.Min(oldest, q[0].Read);
            }
        }
        return oldest;
    }

    /// <summary>The hub's state and its upstream's (outputs may be read from different threads, so the hub owns its upstream).</summary>
    public JsonObject Save()
    {
        lock (_gate)
        {
            return SaveLocked();
        }
    }

    private JsonObject SaveLocked()
    {
        bool any = _queues.Any(q => q.Count > 0);
        JsonObject state = _reader.Save(OldestHeld(), any);
        state["current"] = GraphState.Capture(_input);
        state["queues"] = new JsonArray([.. _queues.Select(q => (JsonNode)new JsonArray([.. q.Select(e => (JsonNode)e.Read)]))]);
        state["stamp"] = Interlocked.Increment(ref s_stamps);
        return state;
    }

    /// <summary>Restores the shared state once per restore pass, whichever output is reset first.</summary>
    public void Restore(JsonObject? state, PipelineContext context)
    {
        lock (_gate)
        {
            RestoreLocked(state, context);
        }
    }

    private void RestoreLocked(JsonObject? state, PipelineContext context)
    {
        long stamp = state?["stamp"]?.GetValue<long>() ?? 0;
        if (ReferenceEquals(context, _restoredFor) && stamp == _restoredStamp)
        {
            return;
        }
        (_restoredFor, _restoredStamp) = (context, stamp);
        foreach (List<(long Read, T Item)> q in _queues)
        {
            q.Clear();
        }
        Array.Clear(_taken);
        var owners = new Dictionary<long, List<int>>();
        if (state?["queues"] is JsonArray queues)
        {
            for (int i = 0; i < queues.Count; i++)
            {
                foreach (JsonNode? read in queues[i]!.AsArray())
                {
                    long r = read!.GetValue<long>();
                    if (!owners.TryGetValue(r, out List<int>? list))
                    {
                        owners[r] = list = [];
                    }
                    list.Add(i);
                }
            }
        }
        if (state?["upstream"] is null)
        {
            GraphState.Restore(_input, context, state?["current"] as JsonObject);
        }
        _reader.Restore(state, context, (read, value) =>
        {
            if (owners.TryGetValue(read, out List<int>? outputs))
            {
                foreach (int output in outputs)
                {
                    _queues[output].Add((read, value));
                }
            }
        });
    }
}

/// <summary>One output of a fork or demux; its inputs are the hub's input, so checkpoints reach upstream.</summary>
internal sealed class ForkOutputNode<T> : Node<T>, ForkOutputNodeMarker
{
    private readonly ForkHub<T> _hub;
    private readonly int _index;

    public ForkOutputNode(string id, string type, ForkHub<T> hub, int index, JsonObject? parameters)
        : base(id, type, [hub.Input], parameters)
    {
        (_hub, _index) = (hub, index);
    }

    internal override bool OwnsUpstream => true;

    /// <summary>The shared reader, for the build-time check that its outputs are read on one thread.</summary>
    public object Hub => _hub;

    protected override bool Produce(out T item) => _hub.TryTake(_index, out item);

    protected override void ResetCore(JsonObject? state) => _hub.Restore(state, Context);

    protected override JsonObject? SaveCore() => _hub.Save();
}

/// <summary>Any output of a fork or demux, whatever its item type.</summary>
#pragma warning disable CA1715 // a marker for the build-time check, not a public abstraction
internal interface ForkOutputNodeMarker
#pragma warning restore CA1715
{
    /// <summary>The shared reader.</summary>
    public object Hub { get; }
}

/// <summary>The fork or demux node of a spec: its outputs are "id:0", "id:1", …</summary>
internal sealed class ForkNode<T> : Node<T>, IPorts
{
    private readonly ForkOutputNode<T>[] _outputs;

    public ForkNode(string id, string type, Node<T> input, int outputs, Func<T, int>? route, int buffer, JsonObject? parameters)
        : base(id, type, [input], parameters)
    {
        var hub = new ForkHub<T>(id, input, outputs, route, buffer);
        _outputs = [.. Enumerable.Range(0, outputs).Select(i => new ForkOutputNode<T>($"{id}:{i}", type, hub, i, parameters))];
    }

    public Node? Port(string port) =>
        int.TryParse(port, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) && i < _outputs.Length ? _outputs[i] : null;

    protected override bool Produce(out T item) => throw new DataPipelineException($"node '{Id}' ({Type}) has several outputs: read \"{Id}:0\", \"{Id}:1\", …");

    protected override void ResetCore(JsonObject? state)
    {
    }
}
