namespace Kiln.Data.Imaging;

/// <summary>
/// A small deterministic random stream (SplitMix64) for per-sample augmentation choices.
/// </summary>
/// <remarks>
/// Augmentations take a stream seeded per sample, <see cref="ForSample(ulong, long)"/>, rather than one
/// shared generator: a sample's crop and flip then depend only on (seed, sample index), not on which
/// thread ran it or in what order, so parallel maps, resumes and different worker counts give the same
/// batches. The sequence is fixed by this type (not by the .NET version), and a stream is a mutable struct:
/// pass it by <c>ref</c>.
/// </remarks>
internal struct SampleRandom
{
    private const ulong Golden = 0x9E3779B97F4A7C15UL;

    private ulong _state;

    /// <summary>A stream starting from <paramref name="seed"/>.</summary>
    public SampleRandom(ulong seed)
    {
        _state = seed;
    }

    /// <summary>The stream for sample <paramref name="index"/> of a run seeded with <paramref name="seed"/>.</summary>
    public static SampleRandom ForSample(ulong seed, long index) =>
        new(Mix(seed + Mix(unchecked((ulong)index) ^ Golden)));

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        _state = unchecked(_state + Golden);
        return Mix(_state);
    }

    /// <summary>A double uniform in [0, 1), with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A double uniform in [<paramref name="min"/>, <paramref name="max"/>).</summary>
    public double NextDouble(double min, double max) => min + ((max - min) * NextDouble());

    /// <summary>An integer uniform in [<paramref name="minInclusive"/>, <paramref name="maxExclusive"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is empty.</exception>
    public int NextInt32(int minInclusive, int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(maxExclusive, minInclusive);
        ulong range = (ulong)((long)maxExclusive - minInclusive);
        // Multiply-shift on 32 random bits; the range is at most 2^32, so the result is below it.
        ulong pick = ((NextUInt64() >> 32) * range) >> 32;
        return (int)(minInclusive + (long)pick);
    }

    /// <summary>True with probability <paramref name="probability"/>.</summary>
    public bool NextBoolean(double probability = 0.5) => NextDouble() < probability;

    private static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
