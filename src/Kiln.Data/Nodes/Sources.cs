using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>The integers [start, start + count): an index-addressable source that resumes in O(1).</summary>
internal sealed class RangeNode : Node<long>
{
    private readonly long _start;
    private readonly long _count;
    private long _position;

    public RangeNode(string id, long start, long count, JsonObject? parameters = null)
        : base(id, "range", [], parameters ?? new JsonObject { ["start"] = start, ["count"] = count })
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        (_start, _count) = (start, count);
    }

    protected override bool Produce(out long item)
    {
        if (_position >= _count)
        {
            item = 0;
            return false;
        }
        item = _start + _position++;
        return true;
    }

    protected override void ResetCore(JsonObject? state) => _position = state?["position"]?.GetValue<long>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["position"] = _position };
}

/// <summary>Items held in memory (a list given in code, or the "items" of a spec): resumes in O(1).</summary>
internal sealed class ListNode<T> : Node<T>
{
    private readonly IReadOnlyList<T> _items;
    private int _position;

    public ListNode(string id, IReadOnlyList<T> items, JsonObject? parameters = null)
        : base(id, "items", [], parameters)
    {
        _items = items;
    }

    protected override bool Produce(out T item)
    {
        if (_position >= _items.Count)
        {
            item = default!;
            return false;
        }
        item = _items[_position++];
        return true;
    }

    protected override void ResetCore(JsonObject? state) => _position = state?["position"]?.GetValue<int>() ?? 0;

    protected override JsonObject? SaveCore() => new() { ["position"] = _position };
}
