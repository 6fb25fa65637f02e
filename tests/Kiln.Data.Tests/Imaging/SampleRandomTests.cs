using Kiln.Data.Imaging;

namespace Kiln.Data.Tests.Imaging;

public sealed class SampleRandomTests
{
    [Fact]
    public void NextUInt64_FixedSeed_FixedSequence()
    {
        // SplitMix64 from seed 0: the published first outputs of the algorithm.
        var random = new SampleRandom(0);

        random.NextUInt64().ShouldBe(0xE220A8397B1DCDAFUL);
        random.NextUInt64().ShouldBe(0x6E789E6AA1B965F4UL);
    }

    [Fact]
    public void ForSample_DifferentIndexesOrSeeds_DifferentStreams()
    {
        var firsts = new HashSet<ulong>();
        for (long i = 0; i < 1000; i++)
        {
            firsts.Add(SampleRandom.ForSample(1, i).NextUInt64());
            firsts.Add(SampleRandom.ForSample(2, i).NextUInt64());
        }

        firsts.Count.ShouldBe(2000);
    }

    [Fact]
    public void NextInt32_StaysInRangeAndCoversIt()
    {
        var random = new SampleRandom(5);
        var seen = new int[7];

        for (int i = 0; i < 7000; i++)
        {
            int value = random.NextInt32(-3, 4);
            value.ShouldBeInRange(-3, 3);
            seen[value + 3]++;
        }

        seen.ShouldAllBe(count => count > 850 && count < 1150);
    }

    [Fact]
    public void NextDouble_InUnitIntervalWithMeanNearHalf()
    {
        var random = new SampleRandom(6);
        double[] values = Enumerable.Range(0, 20000).Select(_ => random.NextDouble()).ToArray();

        values.ShouldAllBe(v => v >= 0 && v < 1);
        values.Average().ShouldBeInRange(0.49, 0.51);
    }
}
