using System.Diagnostics;

namespace Kiln.Data;

/// <summary>A node's counters: items, time spent producing them, skipped inputs, time blocked on a queue.</summary>
/// <remarks>Written by the thread that pulls the node, read by any thread; reads may be a moment behind.</remarks>
public sealed class NodeStats
{
    private long _items;
    private long _ticks;
    private long _skipped;
    private long _waitTicks;
    private long _bytes;

    /// <summary>Items yielded.</summary>
    public long Items => Volatile.Read(ref _items);

    /// <summary>Inputs dropped under <see cref="ErrorPolicy.Skip"/>.</summary>
    public long Skipped => Volatile.Read(ref _skipped);

    /// <summary>Bytes read from storage (sources only).</summary>
    public long Bytes => Volatile.Read(ref _bytes);

    /// <summary>Time inside this node's TryNext, its inputs' time included.</summary>
    public TimeSpan Inclusive => Stopwatch.GetElapsedTime(0, Volatile.Read(ref _ticks));

    /// <summary>Time the consumer waited on this node's queue (threaded nodes only).</summary>
    public TimeSpan Waiting => Stopwatch.GetElapsedTime(0, Volatile.Read(ref _waitTicks));

    internal void Record(bool produced, long ticks)
    {
        if (produced)
        {
            _items++;
        }
        _ticks += ticks;
    }

    internal void AddSkipped() => Interlocked.Increment(ref _skipped);

    internal void AddBytes(long bytes) => Interlocked.Add(ref _bytes, bytes);

    internal void AddWait(long ticks) => Interlocked.Add(ref _waitTicks, ticks);
}
