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
    public void Normalize(RgbImage image, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        int plane = image.Width * image.Height;
        if (destination.Length != plane * 3)
        {
            throw new ArgumentException($"A {image.Width}x{image.Height} image needs 3 x {plane} = {plane * 3} floats, the destination has {destination.Length}.", nameof(destination));
        }
        ReadOnlySpan<byte> pixels = image.Pixels;
        ReadOnlySpan<float> red = _table.AsSpan(0, 256);
        ReadOnlySpan<float> green = _table.AsSpan(256, 256);
        ReadOnlySpan<float> blue = _table.AsSpan(512, 256);
        Span<float> r = destination[..plane];
        Span<float> g = destination.Slice(plane, plane);
        Span<float> b = destination.Slice(plane * 2, plane);
        for (int i = 0, p = 0; i < plane; i++, p += 3)
        {
            r[i] = red[pixels[p]];
            g[i] = green[pixels[p + 1]];
            b[i] = blue[pixels[p + 2]];
        }
    }
}
