namespace Kiln.Distributed.Tests;

/// <summary>
/// DistributedDataParallel under mpirun: every rank trains a float64 MLP (rank ≠ 0 perturbed before wrapping, so the
/// construction broadcast must fix it) on its shard of a fixed global batch and compares with a single-process run on
/// the whole batch (|ddp − ref| ≤ 1e-9 × max(1, |ref|)). Sizes are bucket caps: 25 MB (one bucket) and 200 bytes (many).
/// </summary>
public sealed class DdpTests
{
    private const string BucketCaps = "26214400,200";

    private static async Task RunScenariosAsync(int ranks, string scenarios)
    {
        MpiRun.Result result = await MpiRun.RunAsync(ranks, [scenarios, "float64", BucketCaps]);
        result.ExitCode.ShouldBe(0, result.ToString());
        result.OkLines.ShouldBe(ranks * scenarios.Split(',').Length * BucketCaps.Split(',').Length, result.ToString());
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public Task Sgd_and_AdamW_20_steps_match_the_single_process_run(int ranks) =>
        RunScenariosAsync(ranks, "ddp-sgd,ddp-adamw,ddp-fused");

    [Fact]
    public Task Over_a_subgroup_of_the_first_and_last_of_three_ranks_AdamW_matches_the_single_process_run() =>
        RunScenariosAsync(3, "ddp-subgroup");

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public Task NoSync_accumulation_and_a_gradient_on_some_ranks_only(int ranks) =>
        RunScenariosAsync(ranks, "ddp-nosync,ddp-partial");

    [Fact]
    public Task Buckets_are_launched_during_backward_and_results_still_match() =>
        RunScenariosAsync(2, "ddp-overlap,ddp-overlap-bypass,ddp-overlap-backward-thread,ddp-overlap-blocks");

    [Fact]
    public async Task Deterministic_mode_gives_the_same_bits_on_1_2_3_and_4_ranks()
    {
        const string scenarios = "ddp-deterministic-sgd,ddp-deterministic-adamw,ddp-deterministic-sgd-float32";
        var bits = new Dictionary<string, HashSet<string>>();
        // 6 micro-batches: 6, 3 and 2 per rank, and 1, 2, 1, 2 on 4 ranks (uneven shares).
        foreach (int ranks in (int[])[1, 2, 3, 4])
        {
            MpiRun.Result result = await MpiRun.RunAsync(ranks, [scenarios, "float64", BucketCaps]);
            result.ExitCode.ShouldBe(0, result.ToString());
            result.OkLines.ShouldBe(ranks * scenarios.Split(',').Length * BucketCaps.Split(',').Length, result.ToString());
            // A rank's first line may start with the terminal escapes dotnet writes, so the marker is searched for.
            foreach (string line in result.Stdout.Split('\n').Where(l => l.Contains("BITS ", StringComparison.Ordinal)))
            {
                string[] parts = line[line.IndexOf("BITS ", StringComparison.Ordinal)..].Trim().Split(' ');
                string key = parts[1] + " " + parts[2];
                if (!bits.TryGetValue(key, out HashSet<string>? set))
                {
                    bits[key] = set = [];
                }
                set.Add(parts[3]);
            }
        }
        bits.Count.ShouldBe(scenarios.Split(',').Length * BucketCaps.Split(',').Length, string.Join("; ", bits.Keys));
        foreach ((string key, HashSet<string> hashes) in bits)
        {
            hashes.Count.ShouldBe(1, $"{key}: parameter hashes over 1, 2, 3 and 4 ranks: {string.Join(", ", hashes)}");
        }
        foreach (string scenario in scenarios.Split(','))
        {
            bits.Where(b => b.Key.StartsWith(scenario + " ", StringComparison.Ordinal)).SelectMany(b => b.Value).Distinct().Count()
                .ShouldBe(1, $"{scenario}: the bucket cap changed the bits");
        }
    }

    [Fact]
    public Task Deterministic_mode_turns_a_non_finite_gradient_into_NaN_on_every_rank() =>
        RunScenariosAsync(3, "ddp-deterministic-nonfinite");

    [Fact]
    public async Task A_rank_with_a_different_hidden_size_fails_at_construction_naming_the_parameter()
    {
        MpiRun.Result result = await MpiRun.RunAsync(3, ["ddp-mismatch", "float64", "1"]);
        result.ExitCode.ShouldNotBe(0, result.ToString());
        for (int rank = 0; rank < 3; rank++)
        {
            result.Stderr.ShouldContain($"MISMATCH rank {rank}: DistributedDataParallel: the ranks' parameters differ, first at parameter #0: on rank {rank} it is 'fc1.weight'", Case.Sensitive, result.ToString());
        }
        result.OkLines.ShouldBe(0, result.ToString());
    }
}
