using System.Collections.Concurrent;
using System.Diagnostics;
using Kiln.Serve.Archives;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Inference;

/// <summary>
/// One registered model version: its handler (the model loaded once), a bounded queue of jobs and a pool of worker
/// threads that take batches from it. Scaling down stops idle waits only: a worker always finishes the batch it holds.
/// </summary>
internal sealed class ModelVersionHost : IDisposable
{
    private readonly IModelHandler _handler;
    private readonly BlockingCollection<InferenceJob> _queue;
    private readonly List<Worker> _workers = [];
    private readonly Lock _gate = new();
    private readonly ServeMetrics _metrics;
    private readonly ILogger _logger;
    private bool _closed;
    private int _nextWorker;
    private int _pending;

    public ModelVersionHost(ModelArchive archive, string name, string url, IModelHandler handler, ModelSettings settings, ServeMetrics metrics, ILogger logger)
    {
        Archive = archive;
        Name = name;
        Url = url;
        _handler = handler;
        Settings = settings;
        _metrics = metrics;
        _logger = logger;
        _queue = new BlockingCollection<InferenceJob>(new ConcurrentQueue<InferenceJob>(), Math.Max(1, settings.JobQueueSize));
        LoadedAt = DateTimeOffset.UtcNow;
    }

    public ModelArchive Archive { get; }

    public string Name { get; }

    public string Version => Archive.Manifest.ModelVersion;

    public string Url { get; }

    /// <summary>The handler the workers run (for protocol metadata).</summary>
    public IModelHandler Handler => _handler;

    public ModelSettings Settings { get; private set; }

    public DateTimeOffset LoadedAt { get; }

    public int PendingRequests => Volatile.Read(ref _pending);

    public int RemainingCapacity => Math.Max(0, Settings.JobQueueSize - _queue.Count);

    public IReadOnlyList<WorkerStatus> Workers
    {
        get
        {
            lock (_gate)
            {
                return [.. _workers.Select(w => new WorkerStatus(w.Id, w.StartedAt, w.IsStopping ? "UNLOADING" : "READY"))];
            }
        }
    }

    public int WorkerCount
    {
        get
        {
            lock (_gate)
            {
                return _workers.Count(w => !w.IsStopping);
            }
        }
    }

    /// <summary>Queues a job; false when the queue is full, the version is closing or it has no worker (→ 503).</summary>
    public bool TryEnqueue(InferenceJob job)
    {
        lock (_gate)
        {
            if (_closed || !_workers.Any(w => !w.IsStopping) || !_queue.TryAdd(job))
            {
                return false;
            }
            Interlocked.Increment(ref _pending);
            return true;
        }
    }

    /// <summary>Sets the number of workers; returns once the retired ones finished their batches.</summary>
    public async Task ScaleAsync(int minWorkers, int maxWorkers, CancellationToken cancellationToken)
    {
        List<Worker> retiring = [];
        int from;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            Settings = Settings with { MinWorkers = minWorkers, MaxWorkers = maxWorkers };
            List<Worker> active = [.. _workers.Where(w => !w.IsStopping)];
            from = active.Count;
            for (int i = active.Count; i < minWorkers; i++)
            {
                _workers.Add(StartWorker());
            }
            for (int i = active.Count - 1; i >= minWorkers; i--)
            {
                active[i].Stop();
                retiring.Add(active[i]);
            }
        }
        if (from != minWorkers)
        {
            ServeLog.WorkersScaled(_logger, Name, Version, from, minWorkers);
        }
        foreach (Worker worker in retiring)
        {
            await worker.Finished.WaitAsync(cancellationToken).ConfigureAwait(false);
            lock (_gate)
            {
                _workers.Remove(worker);
            }
            worker.Dispose();
        }
    }

    /// <summary>Stops taking requests, lets the workers finish every queued one, then unloads the model and its files.</summary>
    public async Task DrainAsync(CancellationToken cancellationToken)
    {
        Task[] finished;
        int drained;
        lock (_gate)
        {
            if (_closed)
            {
                return;
            }
            _closed = true;
            drained = _queue.Count;
            _queue.CompleteAdding();
            finished = [.. _workers.Select(w => w.Finished)];
        }
        if (finished.Length == 0)
        {
            while (_queue.TryTake(out InferenceJob? orphan))
            {
                orphan.Fail(ServeException.Unavailable($"Model \"{Name}\" was unregistered before a worker could serve the request."));
            }
        }
        await Task.WhenAll(finished).WaitAsync(cancellationToken).ConfigureAwait(false);
        Dispose();
        ServeLog.ModelUnregistered(_logger, Name, Version, drained);
    }

    /// <summary>Unloads the model and deletes its extracted files; call after <see cref="DrainAsync"/> (or on a failed registration).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _closed = true;
            foreach (Worker worker in _workers)
            {
                worker.Dispose();
            }
            _workers.Clear();
        }
        _handler.Dispose();
        _queue.Dispose();
        ModelArchive.TryDelete(Archive.Folder);
    }

    private Worker StartWorker()
    {
        var worker = new Worker($"W-{Name}_{Version}-{Interlocked.Increment(ref _nextWorker)}");
        var thread = new Thread(() => RunWorker(worker)) { IsBackground = true, Name = worker.Id };
        thread.Start();
        return worker;
    }

    private void RunWorker(Worker worker)
    {
        var batch = new List<InferenceJob>(Settings.BatchSize);
        var inputs = new List<HandlerInput>(Settings.BatchSize);
        try
        {
            while (true)
            {
                InferenceJob? first;
                try
                {
                    if (!_queue.TryTake(out first, Timeout.Infinite, worker.StopToken))
                    {
                        return; // queue completed and empty: the version is draining
                    }
                }
                catch (OperationCanceledException)
                {
                    return; // scaled down while idle
                }
                batch.Clear();
                batch.Add(first);
                ModelSettings settings = Settings;
                long deadline = settings.MaxQueueDelayMicroseconds is { } micros
                    ? first.EnqueuedAt + (micros * Stopwatch.Frequency / 1_000_000)
                    : Stopwatch.GetTimestamp() + (settings.MaxBatchDelayMs * Stopwatch.Frequency / 1000);
                while (batch.Count < settings.BatchSize)
                {
                    // At a preferred size, take only what is already queued; otherwise wait (rounded up to whole ms) for more.
                    int wait = settings.PreferredBatchSizes.Contains(batch.Count)
                        ? 0
                        : (int)Math.Max(0, ((deadline - Stopwatch.GetTimestamp()) * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency);
                    if (!_queue.TryTake(out InferenceJob? next, wait))
                    {
                        break;
                    }
                    batch.Add(next);
                }
                RunBatch(worker, batch, inputs);
            }
        }
        finally
        {
            worker.Complete();
        }
    }

    private void RunBatch(Worker worker, List<InferenceJob> batch, List<HandlerInput> inputs)
    {
        long dequeuedAt = Stopwatch.GetTimestamp();
        Interlocked.Add(ref _pending, -batch.Count);
        batch.RemoveAll(job => job.IsDone); // callers that gave up (timeout, disconnect)
        if (batch.Count == 0)
        {
            return;
        }
        inputs.Clear();
        foreach (InferenceJob job in batch)
        {
            _metrics.QueueTime(Name, Version, job.EnqueuedAt, dequeuedAt);
            inputs.Add(new HandlerInput(job.Body, job.ContentType, job.Explain, job.Prepared));
        }
        try
        {
            HandlerOutput[] outputs = _handler.Handle(inputs);
            _metrics.Batch(Name, Version, batch.Count, Stopwatch.GetElapsedTime(dequeuedAt));
            for (int i = 0; i < batch.Count; i++)
            {
                if (outputs[i].Json is { } json)
                {
                    batch[i].Succeed(json, outputs[i].ContentType);
                }
                else if (outputs[i].Deferred is { } deferred)
                {
                    batch[i].SucceedLater(deferred);
                }
                else
                {
                    batch[i].Fail(outputs[i].Error ?? new ServeException(503, "InternalServerException", "Invalid model predict output"));
                }
            }
        }
#pragma warning disable CA1031 // a worker thread must survive any handler failure and report it to the callers
        catch (Exception ex)
#pragma warning restore CA1031
        {
            ServeLog.BatchFailed(_logger, ex, worker.Id, batch.Count);
            ServeException error = ex as ServeException ?? new ServeException(503, "InternalServerException", "Prediction failed", ex);
            foreach (InferenceJob job in batch)
            {
                job.Fail(error);
            }
        }
    }

    private sealed class Worker(string id) : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Id { get; } = id;

        public DateTimeOffset StartedAt { get; } = DateTimeOffset.UtcNow;

        public CancellationToken StopToken => _stop.Token;

        public bool IsStopping => _stop.IsCancellationRequested;

        public Task Finished => _finished.Task;

        public void Stop() => _stop.Cancel();

        public void Complete() => _finished.TrySetResult();

        public void Dispose() => _stop.Dispose();
    }
}

/// <summary>A worker as <c>GET /models/{m}</c> describes it.</summary>
internal sealed record WorkerStatus(string Id, DateTimeOffset StartTime, string Status);
