using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>
/// Shuffles through a buffer of <c>buffer</c> items: fills it, then yields a random held item and refills.
/// A buffer at least as large as the input gives a full permutation. Seeded per <see cref="Node.NodeSeed"/>:
/// the same order on every rank and worker before the shard step, a different one after it.
/// </summary>
internal sealed class ShuffleNode<T> : Node<T>
{
    private readonly int _capacity;
    private readonly ReplayBuffer<T> _reader;
    private readonly List<T> _items = [];
    private readonly List<long> _reads = [];
    private DataRandom _random = new(0);
    private long _sinceMark;

    public ShuffleNode(string id, Node<T> input, int buffer, JsonObject? parameters)
        : base(id, "shuffle", [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(buffer, 1);
        _capacity = buffer;
        _reader = new ReplayBuffer<T>(input, Math.Max(1, buffer / 16));
    }

    protected override bool Produce(out T item)
    {
        while (_items.Count < _capacity && _reader.TryRead(out T value, out long read))
        {
            _items.Add(value);
            _reads.Add(read);
        }
        if (_items.Count == 0)
        {
            item = default!;
            return false;
        }
        int pick = _random.NextInt(_items.Count);
        item = _items[pick];
        int last = _items.Count - 1;
        _items[pick] = _items[last];
        _reads[pick] = _reads[last];
        _items.RemoveAt(last);
        _reads.RemoveAt(last);
        if (++_sinceMark >= _capacity && _reads.Count > 0)
        {
            _reader.Prune(_reads.Min());
            _sinceMark = 0;
        }
        return true;
    }

    protected override void ResetCore(JsonObject? state)
    {
        _items.Clear();
        _reads.Clear();
        _sinceMark = 0;
        _random = state?["random"] is { } saved ? DataRandom.Load(saved) : new DataRandom(NodeSeed);
        if (state is null)
        {
            _reader.Restore(null, Context, (_, _) => { });
            return;
        }
        long[] held = [.. state["held"]!.AsArray().Select(n => n!.GetValue<long>())];
        var slotOf = new Dictionary<long, int>(held.Length);
        for (int i = 0; i < held.Length; i++)
        {
            slotOf[held[i]] = i;
        }
        var slots = new T[held.Length];
        _reader.Restore(state, Context, (read, value) =>
        {
            if (slotOf.TryGetValue(read, out int slot))
            {
                slots[slot] = value;
            }
        });
        _items.AddRange(slots);
        _reads.AddRange(held);
    }

    protected override JsonObject? SaveCore()
    {
        JsonObject state = _reader.Save(_reads.Count > 0 ? _reads.Min() : _reader.Reads, _reads.Count > 0);
        state["held"] = new JsonArray([.. _reads.Select(r => (JsonNode)r)]);
        state["random"] = _random.Save();
        return state;
    }
}
