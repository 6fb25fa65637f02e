using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Data.Imaging;

/// <summary>
/// Writes an <see cref="RgbImage"/> as float CHW (three planes R, G, B) normalised per channel:
/// <c>out[c, y, x] = (pixel[y, x, c] / 255f - mean[c]) / std[c]</c>, torchvision's
/// <c>ToTensor()</c> followed by <c>Normalize(mean, std)</c>.
/// </summary>
/// <remarks>
/// The 256 possible results per channel are computed once, with that exact float expression, so each
/// pixel costs a table look-up. The destination is the caller's memory (for instance one sample's slice of
/// a batch tensor), so batches are filled in place with no per-sample copy. Thread-safe: the table is
/// read-only.
/// </remarks>
internal sealed class ImageNormalizer
{
    private readonly float[] _table = new float[3 * 256];

    /// <summary>A normaliser for three channel means and standard deviations (on the 0..1 scale).</summary>
    /// <exception cref="ArgumentException">Not three values each, or a standard deviation that is not positive.</exception>
    public ImageNormalizer(ReadOnlySpan<float> mean, ReadOnlySpan<float> std)
    {
        if (mean.Length != 3 || std.Length != 3)
        {
            throw new ArgumentException($"Normalize takes three means and three standard deviations (R, G, B), got {mean.Length} and {std.Length}.");
        }
        for (int c = 0; c < 3; c++)
        {
            if (!(std[c] > 0) || !float.IsFinite(std[c]) || !float.IsFinite(mean[c]))
            {
                throw new ArgumentException($"Channel {c}: mean {mean[c]} and std {std[c]} must be finite, std positive.", nameof(std));
            }
            for (int v = 0; v < 256; v++)
            {
                _table[(c * 256) + v] = ((v / 255f) - mean[c]) / std[c];
            }
        }
        Mean = [mean[0], mean[1], mean[2]];
        Std = [std[0], std[1], std[2]];
    }

    /// <summary>ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as torchvision's examples use.</summary>
    public static ImageNormalizer ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>The channel means.</summary>
    public IReadOnlyList<float> Mean { get; }

    /// <summary>The channel standard deviations.</summary>
    public IReadOnlyList<float> Std { get; }

    /// <summary>Writes <paramref name="image"/> into <paramref name="destination"/> as normalised float CHW.</summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is not <c>3 * Height * Width</c> floats.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Normalize(RgbImage image, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        int plane = image.Width * image.Height;
        if (destination.Length != plane * 3)
        {
            throw new ArgumentException($"A {image.Width}x{image.Height} image needs 3 x {plane} = {plane * 3} floats, the destination has {destination.Length}.", nameof(destination));
        }
        ReadOnlySpan<byte> pixels = image.Pixels;
        int i = 0;
        if (Avx2.IsSupported && plane >= 8)
        {
            i = NormalizeAvx2(image, destination, plane);
        }
        ReadOnlySpan<float> red = _table.AsSpan(0, 256);
        ReadOnlySpan<float> green = _table.AsSpan(256, 256);
        ReadOnlySpan<float> blue = _table.AsSpan(512, 256);
        Span<float> r = destination[..plane];
        Span<float> g = destination.Slice(plane, plane);
        Span<float> b = destination.Slice(plane * 2, plane);
        for (int p = i * 3; i < plane; i++, p += 3)
        {
            r[i] = red[pixels[p]];
            g[i] = green[pixels[p + 1]];
            b[i] = blue[pixels[p + 2]];
        }
    }

    /// <summary>
    /// Eight pixels a step: two overlapping 16-byte loads hold their 24 bytes, byte shuffles split R, G and
    /// B, and gathers read the same table as the scalar loop (so results are identical). Returns the
    /// pixels done; the last step stops early enough that its loads stay inside the pixels.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe int NormalizeAvx2(RgbImage image, Span<float> destination, int plane)
    {
        Vector128<byte> redLow = Vector128.Create((byte)0, 3, 6, 9, 12, 15, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        Vector128<byte> redHigh = Vector128.Create((byte)0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 10, 13, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        Vector128<byte> greenLow = Vector128.Create((byte)1, 4, 7, 10, 13, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        Vector128<byte> greenHigh = Vector128.Create((byte)0x80, 0x80, 0x80, 0x80, 0x80, 8, 11, 14, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        Vector128<byte> blueLow = Vector128.Create((byte)2, 5, 8, 11, 14, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        Vector128<byte> blueHigh = Vector128.Create((byte)0x80, 0x80, 0x80, 0x80, 0x80, 9, 12, 15, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80);
        int i = 0;
        fixed (byte* pixels = image.Buffer)
        fixed (float* table = _table)
        fixed (float* output = destination)
        {
            float* red = output, green = output + plane, blue = output + (2 * plane);
            // Pixel i + 7 ends at byte 3i + 24; the second load reads bytes 3i + 8 .. 3i + 23.
            for (; i + 8 <= plane; i += 8)
            {
                byte* p = pixels + (i * 3);
                Vector128<byte> low = Vector128.Load(p);
                Vector128<byte> high = Vector128.Load(p + 8);
                Vector128<byte> r = Ssse3.Shuffle(low, redLow) | Ssse3.Shuffle(high, redHigh);
                Vector128<byte> g = Ssse3.Shuffle(low, greenLow) | Ssse3.Shuffle(high, greenHigh);
                Vector128<byte> b = Ssse3.Shuffle(low, blueLow) | Ssse3.Shuffle(high, blueHigh);
                Avx2.GatherVector256(table, Avx2.ConvertToVector256Int32(r), 4).Store(red + i);
                Avx2.GatherVector256(table + 256, Avx2.ConvertToVector256Int32(g), 4).Store(green + i);
                Avx2.GatherVector256(table + 512, Avx2.ConvertToVector256Int32(b), 4).Store(blue + i);
            }
        }
        return i;
    }
}
