using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>Yields all items of its first input, then of the second, and so on.</summary>
internal sealed class ConcatNode<T> : Node<T>
{
    private readonly Node<T>[] _inputs;
    private int _current;

    public ConcatNode(string id, Node<T>[] inputs, JsonObject? parameters)
        : base(id, "concat", inputs, parameters)
    {
        _inputs = inputs;
    }

    protected override bool Produce(out T item)
    {
        for (; _current < _inputs.Length; _current++)
        {
            if (_inputs[_current].TryNext(out item))
            {
                return true;
            }
        }
        item = default!;
        return false;
    }

    protected override void ResetCore(JsonObject? state) => _current = state?["current"]?.GetValue<int>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["current"] = _current };
}

/// <summary>Pairs the items of two inputs; ends with the shorter.</summary>
internal sealed class ZipNode<T1, T2> : Node<(T1, T2)>
{
    private readonly Node<T1> _first;
    private readonly Node<T2> _second;

    public ZipNode(string id, Node<T1> first, Node<T2> second, JsonObject? parameters)
        : base(id, "zip", [first, second], parameters)
    {
        (_first, _second) = (first, second);
    }

    protected override bool Produce(out (T1, T2) item)
    {
        if (_first.TryNext(out T1 a) && _second.TryNext(out T2 b))
        {
            item = (a, b);
            return true;
        }
        item = default;
        return false;
    }

    protected override void ResetCore(JsonObject? state)
    {
    }
}

/// <summary>
/// Takes one item from each input in turn. <c>stop: "first"</c> ends when any input ends;
/// <c>"all"</c> (default) goes on with the others until every input has ended.
/// </summary>
internal sealed class InterleaveNode<T> : Node<T>
{
    private readonly Node<T>[] _inputs;
    private readonly bool _stopAtFirst;
    private bool[] _done;
    private int _next;

    public InterleaveNode(string id, Node<T>[] inputs, bool stopAtFirst, JsonObject? parameters)
        : base(id, "interleave", inputs, parameters)
    {
        (_inputs, _stopAtFirst) = (inputs, stopAtFirst);
        _done = new bool[inputs.Length];
    }

    protected override bool Produce(out T item)
    {
        for (int tried = 0; tried < _inputs.Length; tried++)
        {
            int i = _next;
            _next = (_next + 1) % _inputs.Length;
            if (_done[i])
            {
                continue;
            }
            if (_inputs[i].TryNext(out item))
            {
                return true;
            }
            _done[i] = true;
            if (_stopAtFirst)
            {
                break;
            }
        }
        item = default!;
        return false;
    }

    protected override void ResetCore(JsonObject? state)
    {
        _next = state?["next"]?.GetValue<int>() ?? 0;
        _done = state?["done"] is JsonArray done ? [.. done.Select(d => d!.GetValue<bool>())] : new bool[_inputs.Length];
    }

    protected override JsonObject? SaveCore() => new() { ["next"] = _next, ["done"] = new JsonArray([.. _done.Select(d => (JsonNode)d)]) };
}

/// <summary>When <see cref="WeightedSampleNode{T}"/> stops.</summary>
internal enum StopRule
{
    /// <summary>Restart inputs that end until every input has ended at least once (the default).</summary>
    CycleUntilAllExhausted,

    /// <summary>Stop when any input ends.</summary>
    FirstExhausted,

    /// <summary>Drop inputs as they end; stop when none is left.</summary>
    AllExhausted,
}

/// <summary>Draws each item from an input chosen at random with the given weights.</summary>
internal sealed class WeightedSampleNode<T> : Node<T>
{
    private readonly Node<T>[] _inputs;
    private readonly double[] _weights;
    private readonly StopRule _stop;
    private DataRandom _random = new(0);
    private bool[] _exhausted;
    private bool[] _active;

    public WeightedSampleNode(string id, Node<T>[] inputs, double[] weights, StopRule stop, JsonObject? parameters)
        : base(id, "weighted_sample", inputs, parameters)
    {
        if (weights.Length != inputs.Length || weights.Any(w => !(w >= 0)) || weights.Sum() <= 0)
        {
            throw new ArgumentException("weights must be one non-negative number per input, not all zero", nameof(weights));
        }
        (_inputs, _weights, _stop) = (inputs, weights, stop);
        _exhausted = new bool[inputs.Length];
        _active = [.. weights.Select(w => w > 0)];
    }

    protected override bool Produce(out T item)
    {
        while (_active.Any(a => a))
        {
            int i = Pick();
            if (_inputs[i].TryNext(out item))
            {
                return true;
            }
            _exhausted[i] = true;
            switch (_stop)
            {
                case StopRule.FirstExhausted:
                    Array.Fill(_active, false);
                    break;
                case StopRule.AllExhausted:
                    _active[i] = false;
                    break;
                default:
                    if (_exhausted.Where((_, k) => _weights[k] > 0).All(e => e))
                    {
                        Array.Fill(_active, false);
                    }
                    else
                    {
                        GraphState.Restore(_inputs[i], Context, null);
                    }
                    break;
            }
        }
        item = default!;
        return false;
    }

    private int Pick()
    {
        double total = 0;
        for (int i = 0; i < _weights.Length; i++)
        {
            total += _active[i] ? _weights[i] : 0;
        }
        double x = _random.NextDouble() * total;
        int last = 0;
        for (int i = 0; i < _weights.Length; i++)
        {
            if (!_active[i])
            {
                continue;
            }
            last = i;
            x -= _weights[i];
            if (x < 0)
            {
                return i;
            }
        }
        return last;
    }

    protected override void ResetCore(JsonObject? state)
    {
        _random = state?["random"] is { } saved ? DataRandom.Load(saved) : new DataRandom(NodeSeed);
        _exhausted = state?["exhausted"] is JsonArray e ? [.. e.Select(d => d!.GetValue<bool>())] : new bool[_inputs.Length];
        _active = state?["active"] is JsonArray a ? [.. a.Select(d => d!.GetValue<bool>())] : [.. _weights.Select(w => w > 0)];
    }

    protected override JsonObject? SaveCore() => new()
    {
        ["random"] = _random.Save(),
        ["exhausted"] = new JsonArray([.. _exhausted.Select(d => (JsonNode)d)]),
        ["active"] = new JsonArray([.. _active.Select(d => (JsonNode)d)]),
    };
}
