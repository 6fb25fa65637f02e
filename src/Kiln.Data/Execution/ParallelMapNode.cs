using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>
/// Applies a function on <c>threads</c> threads of its own: ordered (items leave in input order) or
/// unordered (as they finish). At most <c>in_flight</c> items are between the input and the consumer, so
/// memory stays bounded whatever the input's size. With one thread and the identity function it is a
/// prefetch: the input runs ahead of the consumer by up to <c>in_flight</c> items.
/// </summary>
/// <remarks>
/// Checkpoint: this node owns its upstream. Whenever it reads from its input it can snapshot the upstream
/// (every <c>snapshot_every</c> reads); its state is the newest snapshot the consumer has passed, plus which
/// items were handed out after it. Restoring resets the upstream to that snapshot and re-reads, without
/// mapping, the items between the snapshot and the resume point: at most <c>snapshot_every</c> - 1 of them
/// (more for unordered maps, whose handed-out items need not be a prefix).
/// </remarks>
internal sealed class ParallelMapNode<TIn, TOut> : Node<TOut>
{
    private readonly Node<TIn> _input;
    private readonly Func<TIn, long, TOut> _map;
    private readonly int _threads;
    private readonly bool _ordered;
    private readonly int _inFlight;
    private readonly int _snapshotEvery;
    private readonly Lock _readLock = new();
    private readonly object _gate = new();
    private readonly Dictionary<long, Completed> _completed = [];
    private readonly Queue<long> _finishOrder = new();
    private readonly SortedList<long, JsonObject> _snapshots = [];
    private readonly HashSet<long> _deliveredAbove = [];
    private HashSet<long> _alreadyDelivered = [];
    private SemaphoreSlim _permits;
    private CancellationTokenSource? _stop;
    private Thread[] _workers = [];
    private long _reads;
    private long _total = long.MaxValue;
    private long _lowestUndelivered;

    public ParallelMapNode(string id, Node<TIn> input, Func<TIn, TOut> map, int threads, bool ordered, int inFlight, int snapshotEvery, JsonObject? parameters, string type = "parallel_map")
        : this(id, input, (x, _) => map(x), threads, ordered, inFlight, snapshotEvery, parameters, type)
    {
    }

    /// <summary>A map whose function also gets the item's index in the epoch (for per-sample randomness).</summary>
    public ParallelMapNode(string id, Node<TIn> input, Func<TIn, long, TOut> map, int threads, bool ordered, int inFlight, int snapshotEvery, JsonObject? parameters, string type)
        : base(id, type, [input], parameters)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(inFlight, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(snapshotEvery, 1);
        (_input, _map, _threads, _ordered, _inFlight, _snapshotEvery) = (input, map, threads, ordered, inFlight, snapshotEvery);
        _permits = new SemaphoreSlim(inFlight);
    }

    internal override bool OwnsUpstream => true;

    private readonly record struct Completed(bool HasValue, TOut Value, ExceptionDispatchInfo? Error);

    protected override bool Produce(out TOut item)
    {
        if (_workers.Length == 0)
        {
            Start();
        }
        long started = Stopwatch.GetTimestamp();
        ExceptionDispatchInfo? error = null;
        lock (_gate)
        {
            while (error is null)
            {
                if (TryTake(out long seq, out Completed done))
                {
                    _permits.Release();
                    MarkDelivered(seq);
                    if (done.Error is not null)
                    {
                        error = done.Error;
                        break;
                    }
                    if (!done.HasValue)
                    {
                        continue; // skipped under on_error: skip
                    }
                    Stats.AddWait(Stopwatch.GetTimestamp() - started);
                    item = done.Value;
                    return true;
                }
                if (_lowestUndelivered >= _total)
                {
                    item = default!;
                    return false;
                }
                Monitor.Wait(_gate);
            }
        }
        Stop();
        error.Throw();
        item = default!;
        return false;
    }

    private bool TryTake(out long seq, out Completed done)
    {
        if (_ordered)
        {
            seq = _lowestUndelivered;
            return _completed.Remove(seq, out done);
        }
        while (_finishOrder.TryDequeue(out seq))
        {
            if (_completed.Remove(seq, out done))
            {
                return true;
            }
        }
        done = default;
        return false;
    }

    private void MarkDelivered(long seq)
    {
        if (seq == _lowestUndelivered)
        {
            _lowestUndelivered++;
            while (_deliveredAbove.Remove(_lowestUndelivered))
            {
                _lowestUndelivered++;
            }
        }
        else
        {
            _deliveredAbove.Add(seq);
        }
    }

    private void Start()
    {
        _stop = new CancellationTokenSource();
        CancellationToken token = _stop.Token;
        _workers = [.. Enumerable.Range(0, _threads).Select(i => new Thread(() => Work(token)) { IsBackground = true, Name = $"kiln-data-{Id}-{i}" })];
        foreach (Thread worker in _workers)
        {
            worker.Start();
        }
    }

    private void Work(CancellationToken token)
    {
        try
        {
            while (true)
            {
                _permits.Wait(token);
                TIn value;
                long seq;
                lock (_readLock)
                {
                    if (_reads >= _total || token.IsCancellationRequested)
                    {
                        _permits.Release();
                        return;
                    }
                    bool got;
                    try
                    {
                        got = _input.TryNext(out value);
                    }
                    catch (Exception ex)
                    {
                        Complete(_reads, new Completed(false, default!, ExceptionDispatchInfo.Capture(ex)));
                        _total = ++_reads;
                        return;
                    }
                    if (!got)
                    {
                        _permits.Release();
                        lock (_gate)
                        {
                            _total = _reads;
                            Monitor.PulseAll(_gate);
                        }
                        return;
                    }
                    seq = _reads++;
                    if (_reads % _snapshotEvery == 0)
                    {
                        try
                        {
                            JsonObject snapshot = GraphState.Capture(_input);
                            lock (_gate)
                            {
                                _snapshots[_reads] = snapshot;
                            }
                        }
                        catch (Exception ex)
                        {
                            Complete(seq, new Completed(false, default!, ExceptionDispatchInfo.Capture(ex)));
                            _total = _reads;
                            return;
                        }
                    }
                }
                if (_alreadyDelivered.Contains(seq))
                {
                    Complete(seq, new Completed(false, default!, null));
                    continue;
                }
                Completed result;
                try
                {
                    result = new Completed(true, _map(value, seq), null);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    try
                    {
                        result = ShouldSkip(ex, MapNode<TIn, TOut>.Describe(value))
                            ? new Completed(false, default!, null)
                            : new Completed(false, default!, ExceptionDispatchInfo.Capture(ex));
                    }
                    catch (DataPipelineException named)
                    {
                        result = new Completed(false, default!, ExceptionDispatchInfo.Capture(named));
                    }
                }
                Complete(seq, result);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Complete(long seq, Completed result)
    {
        lock (_gate)
        {
            _completed[seq] = result;
            _finishOrder.Enqueue(seq);
            Monitor.PulseAll(_gate);
        }
    }

    private void Stop()
    {
        if (_workers.Length == 0)
        {
            return;
        }
        _stop!.Cancel();
        lock (_gate)
        {
            Monitor.PulseAll(_gate);
        }
        foreach (Thread worker in _workers)
        {
            worker.Join();
        }
        _stop.Dispose();
        _stop = null;
        _workers = [];
    }

    protected override void ResetCore(JsonObject? state)
    {
        Stop();
        _completed.Clear();
        _finishOrder.Clear();
        _snapshots.Clear();
        _deliveredAbove.Clear();
        _alreadyDelivered = [];
        _permits.Dispose();
        _permits = new SemaphoreSlim(_inFlight);
        _total = long.MaxValue;
        long at = state?["at"]?.GetValue<long>() ?? 0;
        GraphState.Restore(_input, Context, state?["upstream"] as JsonObject);
        long lowest = state?["lowest"]?.GetValue<long>() ?? 0;
        GraphState.Skip(_input, lowest - at);
        _reads = _lowestUndelivered = lowest;
        if (state?["delivered"] is JsonArray above)
        {
            _alreadyDelivered = [.. above.Select(n => n!.GetValue<long>())];
            _deliveredAbove.UnionWith(_alreadyDelivered);
        }
        _snapshots[lowest] = GraphState.Capture(_input);
    }

    protected override JsonObject? SaveCore()
    {
        lock (_gate)
        {
            // The newest snapshot at or before the lowest item not yet handed out.
            int index = -1;
            for (int i = _snapshots.Count - 1; i >= 0; i--)
            {
                if (_snapshots.Keys[i] <= _lowestUndelivered)
                {
                    index = i;
                    break;
                }
            }
            if (index < 0)
            {
                throw new InvalidOperationException($"node '{Id}' has no snapshot to save");
            }
            long at = _snapshots.Keys[index];
            JsonObject upstream = _snapshots.Values[index];
            // Older snapshots are never needed again.
            for (int i = 0; i < index; i++)
            {
                _snapshots.RemoveAt(0);
            }
            return new JsonObject
            {
                ["at"] = at,
                ["upstream"] = upstream.DeepClone(),
                ["lowest"] = _lowestUndelivered,
                ["delivered"] = new JsonArray([.. _deliveredAbove.Order().Select(s => (JsonNode)s)]),
            };
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Stop();
            _permits.Dispose();
        }
        base.Dispose(disposing);
    }
}
