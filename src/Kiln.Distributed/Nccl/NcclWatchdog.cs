using System.Diagnostics;
using Kiln.Distributed.Mpi;
using TorchSharp;

namespace Kiln.Distributed.Nccl;

/// <summary>
/// Watches the collectives of an NCCL group: the call itself (NCCL's host side blocks while it connects to a peer
/// that never comes) and then its work on the GPU, followed by a CUDA event on its stream. One background thread looks
/// at the call in progress, the oldest pending event and the communicator's asynchronous error, and calls
/// <c>onFailure</c> once with a description when a collective has run longer than the timeout since its call began (a
/// peer died, hung or called another collective: NCCL's kernels would spin forever) or NCCL or CUDA reports an error. Events are
/// reused once complete, so a step of collectives allocates nothing after the first.
/// </summary>
internal sealed class NcclWatchdog : IDisposable
{
    private readonly IGpuEvents _gpu;
    private readonly TimeSpan _timeout;
    private readonly int _rank;
    private readonly int _worldSize;
    private readonly Action<string> _onFailure;
    private readonly Lock _lock = new();
    private readonly Queue<Pending> _pending = new();
    private readonly Stack<IntPtr> _free = new();
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread? _thread;
    private long _sequence;
    private Pending? _inCall;
    private bool _disposed;

    public NcclWatchdog(IGpuEvents gpu, TimeSpan timeout, int rank, int worldSize, Action<string> onFailure)
    {
        _gpu = gpu;
        _timeout = timeout;
        _rank = rank;
        _worldSize = worldSize;
        _onFailure = onFailure;
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            _thread = new Thread(Watch) { IsBackground = true, Name = "Kiln.Distributed NCCL watchdog" };
            _thread.Start();
        }
    }

    /// <summary>What the watchdog needs of CUDA and NCCL; the group implements it over its bindings, tests with fakes.</summary>
    internal interface IGpuEvents
    {
        public IntPtr CreateEvent();

        public void RecordEvent(IntPtr cudaEvent, IntPtr stream);

        /// <summary>True once the work before the event is done, false while pending; throws with CUDA's reason on an error.</summary>
        public bool IsComplete(IntPtr cudaEvent);

        public void DestroyEvent(IntPtr cudaEvent);

        /// <summary>The communicator's asynchronous error as text, or null while there is none.</summary>
        public string? AsyncError();
    }

    /// <summary>How often the thread looks, as the mpi backend's watchdog.</summary>
    public TimeSpan Interval => CollectiveWatchdog.PollInterval(_timeout);

    /// <summary>Collectives queued and not yet seen complete.</summary>
    public int PendingCount
    {
        get
        {
            lock (_lock)
            {
                return _pending.Count;
            }
        }
    }

    /// <summary>
    /// Marks the start of an NCCL call (the host itself may block in it: NCCL connects to peers at their first
    /// collective); <paramref name="count"/> is its element count, <paramref name="peer"/> -1 without a peer. The group
    /// makes one call at a time. Does nothing without a timeout.
    /// </summary>
    public void Begin(string operation, long count, torch.ScalarType dtype, int peer = -1)
    {
        if (_thread is null)
        {
            return;
        }
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _inCall = new Pending(operation, ++_sequence, count, dtype, peer, IntPtr.Zero, Stopwatch.GetTimestamp());
        }
    }

    /// <summary>The call <see cref="Begin"/> started returned having queued its work on <paramref name="stream"/>: follows it there.</summary>
    public void Queued(IntPtr stream)
    {
        if (_thread is null)
        {
            return;
        }
        lock (_lock)
        {
            if (_inCall is not { } call)
            {
                throw new InvalidOperationException("NcclWatchdog.Queued without Begin");
            }
            _inCall = null;
            IntPtr cudaEvent = _free.Count > 0 ? _free.Pop() : _gpu.CreateEvent();
            try
            {
                _gpu.RecordEvent(cudaEvent, stream);
            }
            catch
            {
                _free.Push(cudaEvent);
                throw;
            }
            _pending.Enqueue(call with { Event = cudaEvent });
        }
    }

    /// <summary>The call <see cref="Begin"/> started failed and queued nothing.</summary>
    public void Abandon()
    {
        lock (_lock)
        {
            _inCall = null;
        }
    }

    /// <summary>Stops and joins the thread and destroys every event (CUDA frees a pending one once it completes).</summary>
    public void Dispose()
    {
        _stop.Set();
        if (_thread is not null && _thread != Thread.CurrentThread)
        {
            _thread.Join();
        }
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            foreach (Pending pending in _pending)
            {
                _gpu.DestroyEvent(pending.Event);
            }
            foreach (IntPtr cudaEvent in _free)
            {
                _gpu.DestroyEvent(cudaEvent);
            }
            _pending.Clear();
            _free.Clear();
        }
        _stop.Dispose();
    }

    /// <summary>One pass: retires completed collectives from the front and returns a failure's description, or null.</summary>
    internal string? Check()
    {
        lock (_lock)
        {
            if (_gpu.AsyncError() is { } error)
            {
                string last = _pending.Count > 0 ? $"; the oldest collective not yet complete is {Name(_pending.Peek())}" : "";
                return $"NCCL reported an asynchronous error on rank {_rank} of {_worldSize}: {error}{last}; aborting the job";
            }
            if (_inCall is { } call && Stopwatch.GetElapsedTime(call.Queued) > _timeout)
            {
                return CollectiveWatchdog.Describe(call.Operation, call.Sequence, _rank, _worldSize, call.Count, call.Dtype, call.Peer, _timeout);
            }
            while (_pending.Count > 0)
            {
                Pending oldest = _pending.Peek();
                bool complete;
                try
                {
                    complete = _gpu.IsComplete(oldest.Event);
                }
                catch (DistributedException e)
                {
                    return $"{Name(oldest)} failed on the GPU: {e.Message}; aborting the job";
                }
                if (!complete)
                {
                    return Stopwatch.GetElapsedTime(oldest.Queued) > _timeout
                        ? CollectiveWatchdog.Describe(oldest.Operation, oldest.Sequence, _rank, _worldSize, oldest.Count, oldest.Dtype, oldest.Peer, _timeout)
                        : null;
                }
                _free.Push(_pending.Dequeue().Event);
            }
            return null;
        }
    }

    private static string Name(Pending pending) => $"{pending.Operation} #{pending.Sequence}";

    private void Watch()
    {
        TimeSpan interval = Interval;
        while (!_stop.Wait(interval))
        {
            if (Check() is { } failure)
            {
                _onFailure(failure);
                return;
            }
        }
    }

    private readonly record struct Pending(string Operation, long Sequence, long Count, torch.ScalarType Dtype, int Peer, IntPtr Event, long Queued);
}
