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

    /// <summary>How many buckets were all-reduced in the gradients' own memory (no flattening copy, no copy back).</summary>
    internal int BucketsReducedInPlace { get; private set; }

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
    /// Starts the sum over ranks of bucket <paramref name="index"/>'s gradients and, as a second collective, of one
    /// presence flag per parameter (1 where it has a gradient). When every gradient is present and they lie back to back
    /// in one buffer in registration order (FusedAdamW's flat gradients), that memory is reduced in place; otherwise the
    /// gradients (zeros where a parameter has none) are copied into one flat tensor first. Both ways make the same two
    /// collectives of the same sizes, so ranks may differ in which one they take.
    /// </summary>
    private void LaunchBucket(int index)
    {
        Bucket bucket = _buckets[index];
        var present = new bool[bucket.Parameters.Length];
        torch.Tensor data, flags;
        bool inPlace;
        using (var scope = torch.NewDisposeScope())
        using (var noGrad = torch.no_grad())
        {
            for (int k = 0; k < bucket.Parameters.Length; k++)
            {
                present[k] = _parameters[bucket.Parameters[k]].Parameter.grad is not null;
            }
            torch.Tensor? region = present.All(p => p) ? GradientRegion(bucket) : null;
            inPlace = region is not null;
            if (region is null)
            {
                var pieces = new torch.Tensor[bucket.Parameters.Length];
                for (int k = 0; k < bucket.Parameters.Length; k++)
                {
                    torch.Tensor p = _parameters[bucket.Parameters[k]].Parameter;
                    pieces[k] = p.grad is { } grad ? grad.reshape(-1) : torch.zeros(p.numel(), dtype: p.dtype, device: p.device);
                }
                region = torch.cat(pieces, 0);
            }
            data = region.DetachFromDisposeScope();
            torch.Tensor first = _parameters[bucket.Parameters[0]].Parameter;
            // Filled on the device: a host array copied over would make the host wait for the GPU (a pageable copy synchronises).
            flags = torch.ones(bucket.Parameters.Length, dtype: first.dtype, device: first.device);
            for (int k = 0; k < present.Length; k++)
            {
                if (!present[k])
                {
                    flags.narrow(0, k, 1).zero_();
                }
            }
            flags.DetachFromDisposeScope();
        }
        try
        {
            ICollectiveWork dataWork = StartSum(data);
            ICollectiveWork flagWork = StartSum(flags);
            _launched.Add(new LaunchedBucket(index, data, flags, inPlace, dataWork, flagWork, present));
            BucketsReducedInPlace += inPlace ? 1 : 0;
        }
        catch
        {
            data.Dispose();
            flags.Dispose();
            throw;
        }
    }

    private ICollectiveWork StartSum(torch.Tensor tensor) => Group.AllReduceAsync(tensor, ReduceOp.Sum);

    /// <summary>
    /// One flat view over the bucket's gradients when they are contiguous and follow each other in one buffer in
    /// registration order (the bucket lists them in reverse); otherwise null. Consecutive storage offsets together with
    /// consecutive addresses mean one base address, so one storage.
    /// </summary>
    private torch.Tensor? GradientRegion(Bucket bucket)
    {
        torch.Tensor? first = null;
        long total = 0, nextOffset = 0, nextAddress = 0;
        for (int k = bucket.Parameters.Length - 1; k >= 0; k--)
        {
            torch.Tensor grad = _parameters[bucket.Parameters[k]].Parameter.grad!;
            if (!grad.is_contiguous())
            {
                return null;
            }
            long offset = grad.storage_offset(), address = TensorMemory.Address(grad), bytes = grad.numel() * grad.element_size();
            if (first is not null && (offset != nextOffset || address != nextAddress))
            {
                return null;
            }
            first ??= grad;
            total += grad.numel();
            nextOffset = offset + grad.numel();
            nextAddress = address + bytes;
        }
        return first!.as_strided([total], [1], first.storage_offset());
    }

    /// <summary>Waits for every launched bucket in order and writes the averages into the gradients.</summary>
    private void FinishBuckets()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (LaunchedBucket launched in _launched)
        {
            launched.DataWork.Wait();
            launched.FlagWork.Wait();
            Bucket bucket = _buckets[launched.Index];
            int count = bucket.Parameters.Length;
            // The flags only matter for a parameter without a local gradient (did any rank have one?); reading them
            // makes the host wait for the all-reduce, so the common case, every gradient present, never does.
            double[]? ranksWithGradient = launched.Present.All(p => p) ? null
                : launched.Flags.to_type(torch.ScalarType.Float64).cpu().data<double>().ToArray();
            HostReadsOfPresenceFlags += ranksWithGradient is null ? 0 : 1;
            torch.Tensor averages = launched.Data.div_(Group.WorldSize);
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
                if (!launched.InPlace && (ranksWithGradient is null || ranksWithGradient[k] > 0))
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
            launched.Data.Dispose();
            launched.Flags.Dispose();
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

    /// <summary>
    /// A bucket whose all-reduces have started: the gradients' flat tensor (a view of the gradients themselves when
    /// <paramref name="InPlace"/>), the presence flags, the two works, and which parameters had a gradient at launch.
    /// </summary>
    private sealed record LaunchedBucket(int Index, torch.Tensor Data, torch.Tensor Flags, bool InPlace, ICollectiveWork DataWork, ICollectiveWork FlagWork, bool[] Present);
}
