namespace Kiln.Distributed;

/// <summary>Settings of a <see cref="DistributedDataParallel"/>.</summary>
public sealed class DistributedDataParallelOptions
{
    /// <summary>The defaults: 25 MB buckets, averaging in floating point, overlap with backward on.</summary>
    public static DistributedDataParallelOptions Default { get; } = new();

    /// <summary>
    /// The largest bucket of gradients one all-reduce carries, in bytes (a gradient larger than that is a bucket of its
    /// own). Default <see cref="DistributedDataParallel.DefaultBucketCapBytes"/>.
    /// </summary>
    public long BucketCapBytes { get; init; } = DistributedDataParallel.DefaultBucketCapBytes;

    /// <summary>
    /// Bit-identical gradients for any number of ranks: the training loop runs the global batch in micro-batches of one
    /// fixed size and calls <see cref="DistributedDataParallel.AccumulateMicroBatch"/> after each micro-batch's
    /// backward; <see cref="DistributedDataParallel.SynchronizeGradients"/> then sums the stored micro-batch gradients
    /// exactly in 64-bit fixed point and writes their mean. Costs one gradient copy per micro-batch held on the rank.
    /// No overlap with backward in this mode. Default false.
    /// </summary>
    public bool Deterministic { get; init; }

    /// <summary>
    /// Launch each bucket's all-reduce during backward, as soon as its gradients are complete. Readiness is seen per
    /// block: the outermost submodules (taking and returning one tensor) whose parameters fit in one bucket, or leaves
    /// larger than that, each of which must be called through <c>call</c> so that its forward pre-hook runs. Default
    /// true; ignored in <see cref="Deterministic"/> mode.
    /// </summary>
    public bool OverlapWithBackward { get; init; } = true;
}
