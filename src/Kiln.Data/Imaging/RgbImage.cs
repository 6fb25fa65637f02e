using System.Buffers;

namespace Kiln.Data.Imaging;

/// <summary>
/// An 8-bit RGB image: <see cref="Height"/> rows of <see cref="Width"/> pixels, each pixel three bytes
/// R, G, B, rows packed with no padding (HWC, stride <c>Width * 3</c>).
/// </summary>
/// <remarks>
/// <para>The pixels live in an array rented from <see cref="ArrayPool{T}.Shared"/>; <see cref="Dispose"/>
/// returns it. Whoever holds an image owns it and disposes it exactly once. Decoders and transforms hand
/// back a new image the caller owns; transforms never dispose their input (the caller still owns it).
/// Methods that change an image in place say so in their name or docs.</para>
/// <para>The rented array always has at least <see cref="Slack"/> bytes past the last pixel, so
/// resamplers may load four bytes at the last pixel's offset; those bytes are not part of the image.</para>
/// </remarks>
internal sealed class RgbImage : IDisposable
{
    /// <summary>Bytes kept past the last pixel so four-byte loads at any pixel stay inside the array.</summary>
    internal const int Slack = 4;

    /// <summary>The largest width or height accepted (the JPEG format's own limit).</summary>
    internal const int MaxDimension = 65_535;

    private byte[]? _buffer;

    private RgbImage(byte[] buffer, int width, int height)
    {
        _buffer = buffer;
        Width = width;
        Height = height;
    }

    /// <summary>Pixels per row.</summary>
    public int Width { get; }

    /// <summary>Rows.</summary>
    public int Height { get; }

    /// <summary>Bytes per row: <c>Width * 3</c>.</summary>
    public int Stride => Width * 3;

    /// <summary>Bytes of pixel data: <c>Width * Height * 3</c>.</summary>
    public int Length => Width * Height * 3;

    /// <summary>The pixels, row after row (R, G, B per pixel).</summary>
    /// <exception cref="ObjectDisposedException">The image was disposed.</exception>
    public Span<byte> Pixels => Buffer.AsSpan(0, Length);

    /// <summary>The rented array itself (longer than <see cref="Length"/>), for code that needs a pinned base.</summary>
    internal byte[] Buffer => _buffer ?? throw new ObjectDisposedException(nameof(RgbImage));

    /// <summary>Rents an image of the given size; its pixels are not cleared.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is not in 1..65535.</exception>
    public static RgbImage Rent(int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(width, MaxDimension);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(height, MaxDimension);
        long length = (long)width * height * 3 + Slack;
        if (length > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(width), $"A {width}x{height} RGB image does not fit one array.");
        }
        return new RgbImage(ArrayPool<byte>.Shared.Rent((int)length), width, height);
    }

    /// <summary>Rents an image and copies <paramref name="pixels"/> (HWC, R, G, B) into it.</summary>
    /// <exception cref="ArgumentException"><paramref name="pixels"/> is not <c>width * height * 3</c> bytes.</exception>
    public static RgbImage FromPixels(ReadOnlySpan<byte> pixels, int width, int height)
    {
        RgbImage image = Rent(width, height);
        if (pixels.Length != image.Length)
        {
            image.Dispose();
            throw new ArgumentException($"Expected {width}x{height}x3 = {(long)width * height * 3} bytes, got {pixels.Length}.", nameof(pixels));
        }
        pixels.CopyTo(image.Pixels);
        return image;
    }

    /// <summary>One row's bytes.</summary>
    public Span<byte> Row(int y)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(y);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(y, Height);
        return Buffer.AsSpan(y * Stride, Stride);
    }

    /// <summary>The pixel at (<paramref name="x"/>, <paramref name="y"/>) as (R, G, B).</summary>
    public (byte R, byte G, byte B) GetPixel(int x, int y)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(x);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(x, Width);
        Span<byte> row = Row(y);
        return (row[x * 3], row[(x * 3) + 1], row[(x * 3) + 2]);
    }

    /// <summary>Returns the pixel array to the pool; later use throws <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        byte[]? buffer = Interlocked.Exchange(ref _buffer, null);
        if (buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <inheritdoc />
    public override string ToString() => $"RgbImage {Width}x{Height}";
}
