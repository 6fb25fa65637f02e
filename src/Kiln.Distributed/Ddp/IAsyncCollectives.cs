using TorchSharp;

namespace Kiln.Distributed;

/// <summary>
/// A process group that can start an all-reduce and return before it completes (NCCL on its stream, for example).
/// <see cref="DistributedDataParallel"/> launches gradient buckets through it during backward and waits for them in
/// <see cref="DistributedDataParallel.SynchronizeGradients"/>; a group without it gets blocking all-reduces at launch.
/// </summary>
internal interface IAsyncCollectives
{
    /// <summary>Starts reducing <paramref name="tensor"/> in place over all ranks, as <see cref="IProcessGroup.AllReduce"/> does.</summary>
    /// <param name="tensor">A contiguous tensor that must stay alive and untouched until the work is waited for.</param>
    /// <param name="op">How values are combined.</param>
    /// <returns>The work; <see cref="ICollectiveWork.Wait"/> returns once <paramref name="tensor"/> holds the result.</returns>
    public ICollectiveWork AllReduceAsync(torch.Tensor tensor, ReduceOp op);
}

/// <summary>A collective started by <see cref="IAsyncCollectives"/>.</summary>
internal interface ICollectiveWork
{
    /// <summary>Blocks until the result can be read (for a device backend: until later work on the tensor is ordered after it).</summary>
    public void Wait();
}

/// <summary>A collective that had already finished when it was returned (a blocking backend).</summary>
internal sealed class CompletedCollectiveWork : ICollectiveWork
{
    public static CompletedCollectiveWork Instance { get; } = new();

    public void Wait()
    {
    }
}
