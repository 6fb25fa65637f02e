using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>
/// A small, fast random generator (xoshiro256**) whose whole state is four numbers, so a node can save
/// it in a checkpoint and resume the exact sequence.
/// </summary>
internal sealed class DataRandom
{
    private ulong _s0, _s1, _s2, _s3;

    /// <summary>Seeds the generator from one 64-bit value through SplitMix64.</summary>
    public DataRandom(ulong seed)
    {
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    private DataRandom(ulong s0, ulong s1, ulong s2, ulong s3)
    {
        (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>A uniform integer in [0, <paramref name="bound"/>), without modulo bias.</summary>
    public int NextInt(int bound)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bound, 1);
        // Lemire's multiply-shift with rejection.
        ulong range = (ulong)bound;
        ulong x = NextUInt64() >> 32;
        ulong m = x * range;
        uint low = (uint)m;
        if (low < range)
        {
            uint threshold = (uint)(-(long)range % (long)range);
            while (low < threshold)
            {
                x = NextUInt64() >> 32;
                m = x * range;
                low = (uint)m;
            }
        }
        return (int)(m >> 32);
    }

    /// <summary>A uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>The generator's state, for a checkpoint.</summary>
    public JsonArray Save() => [_s0.ToString(System.Globalization.CultureInfo.InvariantCulture), _s1.ToString(System.Globalization.CultureInfo.InvariantCulture), _s2.ToString(System.Globalization.CultureInfo.InvariantCulture), _s3.ToString(System.Globalization.CultureInfo.InvariantCulture)];

    /// <summary>A generator continuing from a saved state.</summary>
    public static DataRandom Load(JsonNode? state)
    {
        if (state is not JsonArray { Count: 4 } a)
        {
            throw new FormatException("random state must be an array of four numbers");
        }
        ulong Get(int i) => ulong.Parse(a[i]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        return new DataRandom(Get(0), Get(1), Get(2), Get(3));
    }

    /// <summary>Mixes values into one seed (SplitMix64 finaliser over each in turn).</summary>
    public static ulong Mix(params ReadOnlySpan<ulong> values)
    {
        ulong h = 0x9E3779B97F4A7C15UL;
        foreach (ulong v in values)
        {
            h ^= v + 0x9E3779B97F4A7C15UL + (h << 6) + (h >> 2);
            ulong z = h;
            h = SplitMix(ref z);
        }
        return h;
    }

    /// <summary>A stable 64-bit hash of a string (FNV-1a): node ids feed seeds the same way on every run.</summary>
    public static ulong StableHash(string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in text)
        {
            h = (h ^ c) * 1099511628211UL;
        }
        return h;
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
