using TorchSharp;

namespace Kiln.Distributed;

/// <summary>
/// A fixed set of processes (ranks) that run collectives together. Every rank must call the same collectives in the
/// same order with tensors of the same dtype and element count; collectives block until the group has taken part.
/// </summary>
public interface IProcessGroup : IDisposable
{
    /// <summary>The backend's name, e.g. "mpi".</summary>
    public string Backend { get; }

    /// <summary>This process's rank, 0 to <see cref="WorldSize"/> - 1.</summary>
    public int Rank { get; }

    /// <summary>How many processes the group holds.</summary>
    public int WorldSize { get; }

    /// <summary>Reduces <paramref name="tensor"/> over all ranks, in place: afterwards every rank holds the result.</summary>
    /// <param name="tensor">A contiguous tensor on a device the backend supports.</param>
    /// <param name="op">How values are combined.</param>
    public void AllReduce(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>
    /// Starts reducing <paramref name="tensor"/> over all ranks, in place, and returns before it completes (torch's
    /// <c>all_reduce(…, async_op=True)</c>); the result is there once <see cref="ICollectiveWork.Wait"/> returns. nccl
    /// queues it on a side stream that waits for the work already queued; mpi starts an <c>MPI_Iallreduce</c>, which
    /// Open MPI progresses inside MPI calls (<c>Wait</c> among them). Calls still count in the collective order every
    /// rank must keep.
    /// </summary>
    /// <param name="tensor">A contiguous tensor that must stay alive and untouched until the work is waited for.</param>
    /// <param name="op">How values are combined.</param>
    /// <returns>The work.</returns>
    public ICollectiveWork AllReduceAsync(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Copies <paramref name="tensor"/> of rank <paramref name="root"/> into <paramref name="tensor"/> of every other rank.</summary>
    /// <param name="tensor">A contiguous tensor: the source on the root, the destination elsewhere.</param>
    /// <param name="root">The rank whose values are sent.</param>
    public void Broadcast(torch.Tensor tensor, int root);

    /// <summary>Starts <see cref="Broadcast"/> and returns before it completes, as <see cref="AllReduceAsync"/> does.</summary>
    /// <param name="tensor">A contiguous tensor, alive and untouched until the work is waited for.</param>
    /// <param name="root">The rank whose values are sent.</param>
    /// <returns>The work.</returns>
    public ICollectiveWork BroadcastAsync(torch.Tensor tensor, int root);

    /// <summary>
    /// Gathers every rank's <paramref name="input"/> into <paramref name="output"/> of every rank, rank 0's first:
    /// <paramref name="output"/> holds <see cref="WorldSize"/> times as many elements as <paramref name="input"/>.
    /// </summary>
    /// <param name="input">This rank's contribution, contiguous.</param>
    /// <param name="output">A contiguous tensor of the same dtype with WorldSize × input.numel() elements.</param>
    public void AllGather(torch.Tensor input, torch.Tensor output);

    /// <summary>Starts <see cref="AllGather"/> and returns before it completes, as <see cref="AllReduceAsync"/> does.</summary>
    /// <param name="input">This rank's contribution, contiguous; alive and untouched until the work is waited for.</param>
    /// <param name="output">As for <see cref="AllGather"/>; read it only after the work is waited for.</param>
    /// <returns>The work.</returns>
    public ICollectiveWork AllGatherAsync(torch.Tensor input, torch.Tensor output);

    /// <summary>
    /// Reduces <paramref name="input"/> over ranks and leaves block r of the result (input.numel() / WorldSize elements)
    /// in <paramref name="output"/> of rank r.
    /// </summary>
    /// <param name="input">A contiguous tensor whose element count is a multiple of <see cref="WorldSize"/>.</param>
    /// <param name="output">A contiguous tensor of the same dtype with input.numel() / WorldSize elements.</param>
    /// <param name="op">How values are combined.</param>
    public void ReduceScatter(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum);

    /// <summary>
    /// Starts <see cref="ReduceScatter"/> and returns before it completes, as <see cref="AllReduceAsync"/> does (on mpi a
    /// float16 or bfloat16 reduce-scatter runs through float32 copies and is complete on return).
    /// </summary>
    /// <param name="input">As for <see cref="ReduceScatter"/>; alive and untouched until the work is waited for.</param>
    /// <param name="output">As for <see cref="ReduceScatter"/>; read it only after the work is waited for.</param>
    /// <param name="op">How values are combined.</param>
    /// <returns>The work.</returns>
    public ICollectiveWork ReduceScatterAsync(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum);

    /// <summary>
    /// Exchanges equal blocks between all ranks, as torch.distributed's <c>all_to_all_single</c> without split sizes:
    /// block j of <paramref name="input"/> (input.numel() / WorldSize elements) goes to rank j, and block i of
    /// <paramref name="output"/> comes from rank i.
    /// </summary>
    /// <param name="input">A contiguous tensor whose element count is a multiple of <see cref="WorldSize"/>.</param>
    /// <param name="output">A contiguous tensor of the same dtype and element count; not the input.</param>
    public void AllToAll(torch.Tensor input, torch.Tensor output);

    /// <summary>Starts <see cref="AllToAll"/> and returns before it completes, as <see cref="AllReduceAsync"/> does.</summary>
    /// <param name="input">As for <see cref="AllToAll"/>; alive and untouched until the work is waited for.</param>
    /// <param name="output">As for <see cref="AllToAll"/>; read it only after the work is waited for.</param>
    /// <returns>The work.</returns>
    public ICollectiveWork AllToAllAsync(torch.Tensor input, torch.Tensor output);

    /// <summary>Blocks until every rank has called it.</summary>
    public void Barrier();

    /// <summary>
    /// Makes a group of some of this group's ranks, as torch.distributed's <c>new_group(ranks)</c>: every rank of this
    /// group must call it, in the same order relative to its other collectives and with the same ranks. Inside the new
    /// group ranks are numbered 0 to ranks.Count − 1 in the order of their rank here, and a collective's root or peer
    /// is such a group rank. The new group has its own communicator (and, on nccl, its own watchdog and side stream)
    /// and must be disposed before this one.
    /// </summary>
    /// <param name="ranks">Ranks of this group, at least one, none twice, in any order.</param>
    /// <returns>The new group on its members; null on the other ranks.</returns>
    /// <exception cref="ArgumentException">An empty list or a rank named twice.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A rank outside this group.</exception>
    public IProcessGroup? NewGroup(IReadOnlyList<int> ranks);

    /// <summary>Sends <paramref name="tensor"/> to rank <paramref name="destination"/>, which must call <see cref="Recv"/>.</summary>
    /// <param name="tensor">A contiguous tensor.</param>
    /// <param name="destination">The receiving rank.</param>
    /// <param name="tag">Matches the send with a receive of the same tag.</param>
    public void Send(torch.Tensor tensor, int destination, int tag = 0);

    /// <summary>Receives into <paramref name="tensor"/> what rank <paramref name="source"/> sent with <see cref="Send"/>.</summary>
    /// <param name="tensor">A contiguous tensor of the sent dtype and element count.</param>
    /// <param name="source">The sending rank.</param>
    /// <param name="tag">Matches the receive with a send of the same tag.</param>
    public void Recv(torch.Tensor tensor, int source, int tag = 0);
}
