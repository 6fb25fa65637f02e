using TorchSharp;

namespace Kiln.Distributed;

/// <summary>The argument checks every process group makes the same way, whatever its engine.</summary>
internal static class CollectiveArguments
{
    public static void Rank(int rank, int worldSize, string name)
    {
        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(name, rank, $"a rank must be between 0 and {worldSize - 1}");
        }
    }

    /// <summary>A sub-group's members: at least one, each a rank of the parent, none twice; returned sorted.</summary>
    public static int[] GroupRanks(IReadOnlyList<int> ranks, int worldSize)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (ranks.Count == 0)
        {
            throw new ArgumentException("a group needs at least one rank", nameof(ranks));
        }
        foreach (int rank in ranks)
        {
            Rank(rank, worldSize, nameof(ranks));
        }
        int[] sorted = [.. ranks.Order()];
        for (int i = 1; i < sorted.Length; i++)
        {
            if (sorted[i] == sorted[i - 1])
            {
                throw new ArgumentException($"rank {sorted[i]} is named twice", nameof(ranks));
            }
        }
        return sorted;
    }

    public static void SameDtype(torch.Tensor input, torch.Tensor output)
    {
        if (input.dtype != output.dtype)
        {
            throw new ArgumentException($"output is {output.dtype} but input is {input.dtype}.", nameof(output));
        }
    }

    /// <summary>all_gather's output holds world size × input elements.</summary>
    public static void AllGatherOutput(long inputCount, torch.Tensor output, int worldSize)
    {
        if (output.numel() != inputCount * worldSize)
        {
            throw new ArgumentException($"output has {output.numel()} elements; all_gather needs world size × input = {worldSize} × {inputCount}.", nameof(output));
        }
    }

    /// <summary>all_to_all's input and output hold the same number of elements, a multiple of the world size; returns one block's length.</summary>
    public static long AllToAllBlock(torch.Tensor input, torch.Tensor output, int worldSize)
    {
        long total = input.numel();
        if (total % worldSize != 0)
        {
            throw new ArgumentException($"input has {total} elements, which do not split evenly over {worldSize} ranks.", nameof(input));
        }
        if (output.numel() != total)
        {
            throw new ArgumentException($"output has {output.numel()} elements; all_to_all needs as many as input ({total}).", nameof(output));
        }
        return total / worldSize;
    }

    /// <summary>reduce_scatter's input splits evenly over the ranks and output holds one block; returns the block's length.</summary>
    public static long ReduceScatterBlock(torch.Tensor input, torch.Tensor output, int worldSize)
    {
        long total = input.numel();
        if (total % worldSize != 0)
        {
            throw new ArgumentException($"input has {total} elements, not a multiple of the world size {worldSize}.", nameof(input));
        }
        if (output.numel() != total / worldSize)
        {
            throw new ArgumentException($"output has {output.numel()} elements; reduce_scatter needs input / world size = {total / worldSize}.", nameof(output));
        }
        return total / worldSize;
    }
}
