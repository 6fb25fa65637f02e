using Kiln.Data;

namespace Kiln.Distributed;

/// <summary>Ties Kiln.Data's rank/world-size sharding to a process group.</summary>
public static class DataLoaderOptionsExtensions
{
    /// <summary>
    /// Sets <see cref="DataLoaderOptions.Rank"/> and <see cref="DataLoaderOptions.WorldSize"/> from
    /// <paramref name="group"/>, so that the graph's <c>shard</c> node gives each rank its own shard: item <c>i</c> goes
    /// to rank <c>i mod WorldSize</c> (with one worker; see docs/data.md for workers). Every rank must use the same
    /// graph and seed.
    /// </summary>
    /// <param name="options">The options to set; returned for chaining.</param>
    /// <param name="group">The process group whose rank and world size are taken.</param>
    /// <returns><paramref name="options"/>.</returns>
    public static DataLoaderOptions WithProcessGroup(this DataLoaderOptions options, IProcessGroup group)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(group);
        options.Rank = group.Rank;
        options.WorldSize = group.WorldSize;
        return options;
    }
}
