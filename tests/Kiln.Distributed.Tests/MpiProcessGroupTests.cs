namespace Kiln.Distributed.Tests;

/// <summary>
/// Each test starts the worker under mpirun with 2 or 3 ranks; every rank checks its results against a reference it
/// computes from rank-seeded data and prints one "OK" line per scenario and size. Sizes: 1, 7 and 1000003 elements.
/// </summary>
public sealed class MpiProcessGroupTests
{
    private const string Sizes = "1,7,1000003";

    private static async Task RunScenariosAsync(int ranks, string scenarios, string dtype, string sizes = Sizes)
    {
        MpiRun.Result result = await MpiRun.RunAsync(ranks, [scenarios, dtype, sizes]);
        result.ExitCode.ShouldBe(0, result.ToString());
        int expected = ranks * scenarios.Split(',').Length * sizes.Split(',').Length;
        result.OkLines.ShouldBe(expected, result.ToString());
    }

    [Theory]
    [InlineData(2, "float32")]
    [InlineData(3, "float64")]
    [InlineData(3, "float32")]
    public Task AllReduce_sum_avg_min_max_match_the_reference(int ranks, string dtype) =>
        RunScenariosAsync(ranks, "allreduce-sum,allreduce-avg,allreduce-min,allreduce-max,allreduce-async,collectives-async", dtype);

    [Theory]
    [InlineData(2, "float64")]
    [InlineData(3, "float32")]
    public Task Broadcast_from_the_last_rank_and_AllGather_match_the_reference(int ranks, string dtype) =>
        RunScenariosAsync(ranks, "broadcast,allgather", dtype);

    [Theory]
    [InlineData(2, "float32")]
    [InlineData(3, "float64")]
    public Task ReduceScatter_Send_Recv_ring_subgroups_and_AllToAll_match_the_reference(int ranks, string dtype) =>
        RunScenariosAsync(ranks, "reducescatter,sendrecv,subgroups,alltoall", dtype);

    [Theory]
    [InlineData(2, "int64")]
    [InlineData(3, "int32")]
    public Task Integer_AllReduce_Broadcast_and_AllGather_match_the_reference(int ranks, string dtype) =>
        RunScenariosAsync(ranks, "allreduce-sum,allreduce-min,allreduce-max,broadcast,allgather,collectives-async,alltoall", dtype, "1,7,100003");

    [Theory]
    [InlineData(2, "float16")]
    [InlineData(3, "bfloat16")]
    public Task Half_types_move_as_bits_and_reduce_through_float32(int ranks, string dtype) =>
        RunScenariosAsync(ranks, "allreduce-sum,allreduce-avg,allreduce-max,allreduce-async,collectives-async,broadcast,allgather,reducescatter,sendrecv,alltoall", dtype, "1,7,100003");

    [Fact]
    public async Task Without_mpirun_the_worker_is_a_world_of_one()
    {
        MpiRun.Result result = await MpiRun.RunAsync(0, ["allreduce-sum,allreduce-avg,broadcast,allgather,reducescatter,barrier,subgroups,alltoall", "float32", "1,7"]);
        result.ExitCode.ShouldBe(0, result.ToString());
        result.OkLines.ShouldBe(16, result.ToString());
        result.Stdout.ShouldContain("OK rank 0/1 ");
    }

    [Fact]
    public Task Barrier_waits_for_the_late_rank() =>
        RunScenariosAsync(3, "barrier", "float32", "300");

    [Fact]
    public Task Bool_non_contiguous_and_bad_arguments_fail_clearly() =>
        RunScenariosAsync(2, "errors", "float32", "1");

    [Fact]
    public async Task A_launcher_RANK_that_disagrees_with_MPI_is_refused()
    {
        MpiRun.Result result = await MpiRun.RunAsync(2, ["barrier", "float32", "1"], ["-x", "RANK=7"]);
        result.ExitCode.ShouldNotBe(0, result.ToString());
        (result.Stdout + result.Stderr).ShouldContain("RANK=7 from the launcher's environment, but MPI says");
    }
}
