namespace Kiln.Distributed.Tests;

/// <summary>
/// Kiln.Data sharding with the rank and world size taken from the process group (<c>WithProcessGroup</c>): every rank
/// reads range → shuffle → shard, all-gathers the ids it read, and checks that the shards are disjoint, complete, differ
/// in size by at most one and follow the documented rule (rank r keeps positions r mod world size).
/// </summary>
public sealed class DataShardTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Each_rank_reads_its_own_shard_and_together_they_read_everything_once(int ranks)
    {
        MpiRun.Result result = await MpiRun.RunAsync(ranks, ["datashard", "int64", "1,2,103"]);
        result.ExitCode.ShouldBe(0, result.ToString());
        result.OkLines.ShouldBe(ranks * 3, result.ToString());
    }
}
