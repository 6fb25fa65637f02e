namespace Kiln.Data;

/// <summary>
/// Where a pipeline runs: the seed and epoch, and this copy's place among ranks and workers. Every random
/// choice a node makes is a pure function of these values and the node's id (docs/data.md, "Seeds").
/// </summary>
/// <param name="Seed">The run's seed; the same seed gives the same order every run.</param>
/// <param name="Epoch">The epoch, from 0; each epoch reshuffles.</param>
/// <param name="Rank">This process's rank among <paramref name="WorldSize"/>.</param>
/// <param name="WorldSize">How many ranks read the data together.</param>
/// <param name="Worker">This copy's worker index within the rank.</param>
/// <param name="Workers">How many worker copies each rank runs.</param>
public sealed record PipelineContext(ulong Seed = 0, int Epoch = 0, int Rank = 0, int WorldSize = 1, int Worker = 0, int Workers = 1)
{
    /// <summary>The shard this copy reads: shards are numbered worker-major, as PyTorch's DataLoader does.</summary>
    public int ShardIndex => (Worker * WorldSize) + Rank;

    /// <summary>How many shards the data is split into: ranks × workers.</summary>
    public int ShardCount => WorldSize * Workers;

    /// <summary>Checks the values and names the wrong one.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of range.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegative(Epoch, nameof(Epoch));
        ArgumentOutOfRangeException.ThrowIfLessThan(WorldSize, 1, nameof(WorldSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(Workers, 1, nameof(Workers));
        if (Rank < 0 || Rank >= WorldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"rank must be in [0, {WorldSize}).");
        }
        if (Worker < 0 || Worker >= Workers)
        {
            throw new ArgumentOutOfRangeException(nameof(Worker), Worker, $"worker must be in [0, {Workers}).");
        }
    }
}
