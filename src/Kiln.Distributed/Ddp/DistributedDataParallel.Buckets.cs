using TorchSharp;

namespace Kiln.Distributed;

/// <summary>Gradient buckets: fixed at construction, launched in bucket order, finished in <see cref="SynchronizeGradients"/>.</summary>
public sealed partial class DistributedDataParallel
{
    /// <summary>The buckets launched since the last synchronisation, in bucket order.</summary>
    private readonly List<LaunchedBucket> _launched = [];

    /// <summary>The next bucket to launch; every rank launches buckets in this order.</summary>
    private int _nextBucket;

    /// <summary>How many buckets were launched from backward callbacks since the last synchronisation.</summary>
    private int _launchedDuringBackward;

    /// <summary>How many gradient buckets an all-reduce round has.</summary>
    internal int BucketCount => _buckets.Length;

    /// <summary>How many buckets have been launched since the last synchronisation (during backward, before <see cref="SynchronizeGradients"/>).</summary>
    internal int BucketsLaunched
    {
        get
        {
            lock (_stateLock)
            {
                return _nextBucket;
            }
        }
    }

    /// <summary>How many times a bucket's presence flags were copied to the host (only when a local gradient was missing).</summary>
    internal int HostReadsOfPresenceFlags { get; private set; }

    /// <summary>How many buckets the last <see cref="SynchronizeGradients"/> found already launched by backward.</summary>
    internal int LastBucketsLaunchedDuringBackward { get; private set; }

    /// <summary>
    /// Every parameter that requires a gradient, in reverse registration order, cut into buckets of at most
    /// <see cref="BucketCapBytes"/> (a larger parameter is a bucket of its own; a dtype change starts a new bucket).
    /// The same on every rank, since the signatures were checked.
    /// </summary>
    private Bucket[] BuildBuckets()
    {
        var buckets = new List<Bucket>();
        var current = new List<int>();
        long bytes = 0;
        torch.ScalarType? type = null;
        for (int i = _parameters.Length - 1; i >= 0; i--)
        {
            torch.Tensor p = _parameters[i].Parameter;
            if (!p.requires_grad)
            {
                continue;
            }
            long size = p.numel() * p.element_size();
            if (current.Count > 0 && (type != p.dtype || bytes + size > BucketCapBytes))
            {
                buckets.Add(new Bucket([.. current], type!.Value));
                current.Clear();
                bytes = 0;
            }
            current.Add(i);
            bytes += size;
            type = p.dtype;
        }
        if (current.Count > 0)
        {
            buckets.Add(new Bucket([.. current], type!.Value));
        }
        return [.. buckets];
    }

    /// <summary>
    /// Flattens bucket <paramref name="index"/>'s gradients (zeros where a parameter has none) followed by one presence
    /// flag per parameter (1 where it has a gradient) into one tensor and starts its sum over ranks.
    /// </summary>
    private void LaunchBucket(int index)
    {
        Bucket bucket = _buckets[index];
        var present = new bool[bucket.Parameters.Length];
        torch.Tensor flat;
        using (var scope = torch.NewDisposeScope())
        using (var noGrad = torch.no_grad())
        {
            var pieces = new torch.Tensor[bucket.Parameters.Length + 1];
            for (int k = 0; k < bucket.Parameters.Length; k++)
            {
                torch.Tensor p = _parameters[bucket.Parameters[k]].Parameter;
                torch.Tensor? grad = p.grad;
                present[k] = grad is not null;
                pieces[k] = grad is null ? torch.zeros(p.numel(), dtype: p.dtype, device: p.device) : grad.reshape(-1);
            }
            torch.Tensor first = _parameters[bucket.Parameters[0]].Parameter;
            // Filled on the device: a host array copied over would make the host wait for the GPU (a pageable copy synchronises).
            torch.Tensor flags = torch.ones(bucket.Parameters.Length, dtype: first.dtype, device: first.device);
            for (int k = 0; k < present.Length; k++)
            {
                if (!present[k])
                {
                    flags.narrow(0, k, 1).zero_();
                }
            }
            pieces[^1] = flags;
            flat = torch.cat(pieces, 0).DetachFromDisposeScope();
        }
        try
        {
            ICollectiveWork work;
            if (Group is IAsyncCollectives async)
            {
                work = async.AllReduceAsync(flat, ReduceOp.Sum);
            }
            else
            {
                Group.AllReduce(flat, ReduceOp.Sum);
                work = CompletedCollectiveWork.Instance;
            }
            _launched.Add(new LaunchedBucket(index, flat, work, present));
        }
        catch
        {
            flat.Dispose();
            throw;
        }
    }

    /// <summary>Waits for every launched bucket in order and writes the averages into the gradients.</summary>
    private void FinishBuckets()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (LaunchedBucket launched in _launched)
        {
            launched.Work.Wait();
            Bucket bucket = _buckets[launched.Index];
            int count = bucket.Parameters.Length;
            long gradients = launched.Flat.numel() - count;
            // The flags only matter for a parameter without a local gradient (did any rank have one?); reading them
            // makes the host wait for the all-reduce, so the common case, every gradient present, never does.
            double[]? ranksWithGradient = launched.Present.All(p => p) ? null
                : launched.Flat.narrow(0, gradients, count).to_type(torch.ScalarType.Float64).cpu().data<double>().ToArray();
            HostReadsOfPresenceFlags += ranksWithGradient is null ? 0 : 1;
            torch.Tensor averages = launched.Flat.narrow(0, 0, gradients).div_(Group.WorldSize);
            long offset = 0;
            for (int k = 0; k < count; k++)
            {
                (string name, torch.Tensor p) = _parameters[bucket.Parameters[k]];
                long n = p.numel();
                torch.Tensor? grad = p.grad;
                if (grad is not null && !launched.Present[k])
                {
                    throw new DistributedException($"DistributedDataParallel: parameter '{name}' received its gradient after its bucket was launched during backward: it is used outside the module that owns it (or that module is called through forward() in one micro-batch and call() in another); set DistributedDataParallelOptions.OverlapWithBackward = false.");
                }
                if (ranksWithGradient is null || ranksWithGradient[k] > 0)
                {
                    torch.Tensor average = averages.narrow(0, offset, n).view_as(p);
                    if (grad is null)
                    {
                        p.grad = average.clone();
                    }
                    else
                    {
                        grad.copy_(average);
                    }
                }
                offset += n;
            }
        }
    }

    /// <summary>Frees the launched buckets and forgets what the last backward did.</summary>
    private void ResetIteration()
    {
        foreach (LaunchedBucket launched in _launched)
        {
            launched.Flat.Dispose();
        }
        _launched.Clear();
        LastBucketsLaunchedDuringBackward = _launchedDuringBackward;
        _launchedDuringBackward = 0;
        _nextBucket = 0;
        _backwardError = null;
        ResetModuleStates();
    }

    /// <summary>Parameter indices (into the registration-order list) of one bucket, all of <paramref name="Type"/>.</summary>
    private sealed record Bucket(int[] Parameters, torch.ScalarType Type);

    /// <summary>A bucket whose all-reduce has started: its flat buffer (gradients, then presence flags), the work, and which parameters had a gradient at launch.</summary>
    private sealed record LaunchedBucket(int Index, torch.Tensor Flat, ICollectiveWork Work, bool[] Present);
}
