using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>
/// Reads a node's input and remembers enough to rebuild the items it still holds after a restore: the
/// upstream state every few reads, and each item's read number. A checkpoint saves the upstream state from
/// just before the oldest held item plus the numbers of the held items; restoring re-reads from there and
/// keeps exactly those items. Items themselves are never serialized, so any item type checkpoints.
/// </summary>
/// <remarks>Re-reading is bounded by how long the oldest held item has been held (for a shuffle buffer of B, about B reads).</remarks>
internal sealed class ReplayBuffer<T>
{
    private readonly Node<T> _input;
    private readonly int _markEvery;
    private readonly List<(long Read, JsonObject Upstream)> _marks = [];

    public ReplayBuffer(Node<T> input, int markEvery)
    {
        _input = input;
        _markEvery = Math.Max(1, markEvery);
    }

    /// <summary>Reads so far this epoch.</summary>
    public long Reads { get; private set; }

    /// <summary>True once the input has ended.</summary>
    public bool InputDone { get; private set; }

    /// <summary>Reads the next input item and its read number.</summary>
    public bool TryRead(out T item, out long read)
    {
        read = Reads;
        if (InputDone)
        {
            item = default!;
            return false;
        }
        if (Reads % _markEvery == 0)
        {
            _marks.Add((Reads, GraphState.Capture(_input)));
        }
        if (!_input.TryNext(out item))
        {
            InputDone = true;
            return false;
        }
        Reads++;
        return true;
    }

    /// <summary>Forgets marks that no held item needs any more.</summary>
    public void Prune(long oldestHeld)
    {
        int keep = _marks.FindLastIndex(m => m.Read <= oldestHeld);
        if (keep > 0)
        {
            _marks.RemoveRange(0, keep);
        }
    }

    /// <summary>The state: read count, and when items are held, where to replay from.</summary>
    public JsonObject Save(long oldestHeld, bool anyHeld)
    {
        var state = new JsonObject { ["reads"] = Reads, ["done"] = InputDone };
        if (anyHeld)
        {
            (long read, JsonObject upstream) = _marks.FindLast(m => m.Read <= oldestHeld);
            state["from"] = read;
            state["upstream"] = upstream.DeepClone();
        }
        return state;
    }

    /// <summary>Restores the read position; re-reads held items through <paramref name="keep"/>(read number, item).</summary>
    public void Restore(JsonObject? state, PipelineContext context, Action<long, T> keep)
    {
        _marks.Clear();
        Reads = 0;
        InputDone = false;
        if (state is null)
        {
            return;
        }
        long reads = state["reads"]!.GetValue<long>();
        if (state["upstream"] is JsonObject upstream)
        {
            long from = state["from"]!.GetValue<long>();
            GraphState.Restore(_input, context, (JsonObject)upstream.DeepClone());
            _marks.Add((from, upstream));
            for (long read = from; read < reads; read++)
            {
                if (!_input.TryNext(out T item))
                {
                    throw new DataPipelineException($"node '{_input.Id}' ended before the saved position: its input changed since the checkpoint");
                }
                keep(read, item);
            }
        }
        Reads = reads;
        InputDone = state["done"]!.GetValue<bool>();
    }
}
