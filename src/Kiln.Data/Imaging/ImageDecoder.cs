using System.Buffers.Binary;

namespace Kiln.Data.Imaging;

/// <summary>
/// Decodes JPEG and PNG bytes into <see cref="RgbImage"/>s, telling the format from the first bytes.
/// </summary>
/// <remarks>
/// <para>JPEG goes through libjpeg-turbo's TurboJPEG API (libturbojpeg.so.0) with the accurate integer
/// DCT and smooth chroma upsampling, the same decoder and settings as Pillow and torchvision's
/// <c>decode_jpeg</c>; measured twice as fast as SkiaSharp's JPEG codec (docs/data-imaging.md). When that
/// library is missing, and for CMYK/YCCK JPEGs (which TurboJPEG 2.x cannot turn into RGB), SkiaSharp
/// decodes instead. PNG always goes through SkiaSharp; alpha is dropped (as Pillow's <c>convert("RGB")</c>),
/// 16-bit samples are reduced to 8, palettes and gray are expanded, and no colour management is applied.</para>
/// <para>Bad input — unknown format, corrupt or truncated data — throws <see cref="InvalidDataException"/>
/// whose message names the <c>source</c> the caller passed (a file name, URL or tar member). libjpeg's
/// warnings are errors too (a truncated file or a corrupt scan decodes to partly made-up pixels), except
/// two that Pillow also accepts and that lose nothing: extraneous bytes before a marker and out-of-spec
/// SOS parameters.</para>
/// <para>All methods are thread-safe; each thread keeps its own TurboJPEG instance.</para>
/// </remarks>
internal static class ImageDecoder
{
    /// <summary>The JPEG reductions libjpeg-turbo can apply while decoding (DCT scaling), largest last.</summary>
    public static ReadOnlySpan<int> JpegReductions => [1, 2, 4, 8];

    /// <summary>The decoder JPEG goes through in this process, for reports: libjpeg-turbo or SkiaSharp.</summary>
    public static string JpegBackend => TurboJpegDecompressor.IsAvailable
        ? $"libjpeg-turbo ({TurboJpegNative.LibraryName})"
        : $"SkiaSharp (fallback: {TurboJpegNative.LibraryName} not found; install libturbojpeg0)";

    /// <summary>The format the bytes start with.</summary>
    public static ImageFormat Sniff(ReadOnlySpan<byte> data)
    {
        if (data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        {
            return ImageFormat.Jpeg;
        }
        if (data.StartsWith(PngSignature))
        {
            return ImageFormat.Png;
        }
        return ImageFormat.Unknown;
    }

    /// <summary>Reads format and size from the header, without decoding pixels.</summary>
    /// <exception cref="InvalidDataException">The data is not a readable JPEG or PNG; the message names <paramref name="source"/>.</exception>
    public static ImageHeader ReadHeader(ReadOnlySpan<byte> data, string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        switch (Sniff(data))
        {
            case ImageFormat.Jpeg when TurboJpegDecompressor.IsAvailable:
                TurboJpegHeader header = ReadTurboHeader(data, source);
                return new ImageHeader(ImageFormat.Jpeg, header.Width, header.Height);
            case ImageFormat.Jpeg:
                return SkiaImageDecoder.ReadHeader(data, source, ImageFormat.Jpeg);
            case ImageFormat.Png:
                // IHDR is always the first chunk: length 13, "IHDR", width, height (big-endian).
                if (data.Length < 24 || !data.Slice(12, 4).SequenceEqual("IHDR"u8))
                {
                    throw Invalid(source, "PNG", "the IHDR chunk is missing or truncated");
                }
                int width = BinaryPrimitives.ReadInt32BigEndian(data.Slice(16, 4));
                int height = BinaryPrimitives.ReadInt32BigEndian(data.Slice(20, 4));
                if (width <= 0 || height <= 0)
                {
                    throw Invalid(source, "PNG", $"IHDR declares {width}x{height}");
                }
                return new ImageHeader(ImageFormat.Png, width, height);
            default:
                throw UnknownFormat(data, source);
        }
    }

    /// <summary>Decodes the image at full resolution.</summary>
    /// <param name="data">The encoded bytes, JPEG or PNG.</param>
    /// <param name="source">Where the bytes came from, for error messages.</param>
    /// <returns>A new image the caller owns and disposes.</returns>
    /// <exception cref="InvalidDataException">Unknown format, corrupt or truncated data; the message names <paramref name="source"/>.</exception>
    public static RgbImage Decode(ReadOnlySpan<byte> data, string source) => Decode(data, source, jpegReduction: 1);

    /// <summary>
    /// Decodes the image; a JPEG is reduced by <paramref name="jpegReduction"/> (1, 2, 4 or 8) while
    /// decoding, through libjpeg-turbo's DCT scaling, to <c>ceil(width / r)</c> x <c>ceil(height / r)</c>.
    /// </summary>
    /// <remarks>
    /// DCT scaling is a cheap low-pass reduction, close to but not the same as decoding in full and then
    /// resizing with an antialiased filter. It is only worth it when the image is at least twice as large
    /// as what the caller needs (see docs/data-imaging.md). PNGs, and JPEGs when libjpeg-turbo is missing,
    /// come back at full size whatever <paramref name="jpegReduction"/> says: check the returned size.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="jpegReduction"/> is not 1, 2, 4 or 8.</exception>
    /// <exception cref="InvalidDataException">Unknown format, corrupt or truncated data; the message names <paramref name="source"/>.</exception>
    public static RgbImage Decode(ReadOnlySpan<byte> data, string source, int jpegReduction)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (jpegReduction is not (1 or 2 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(jpegReduction), jpegReduction, "A JPEG reduction is 1, 2, 4 or 8.");
        }
        switch (Sniff(data))
        {
            case ImageFormat.Jpeg when TurboJpegDecompressor.IsAvailable:
                return DecodeTurbo(data, source, jpegReduction);
            case ImageFormat.Jpeg:
                return SkiaImageDecoder.Decode(data, source, ImageFormat.Jpeg);
            case ImageFormat.Png:
                return SkiaImageDecoder.Decode(data, source, ImageFormat.Png);
            default:
                throw UnknownFormat(data, source);
        }
    }

    /// <summary>
    /// The largest JPEG reduction r (1, 2, 4 or 8, at most <paramref name="maxReduction"/>) that keeps
    /// <paramref name="window"/> at least <paramref name="width"/> x <paramref name="height"/> once divided by r,
    /// so the resize after it still only shrinks.
    /// </summary>
    public static int ChooseJpegReduction(CropBox window, int width, int height, int maxReduction)
    {
        int best = 1;
        foreach (int r in JpegReductions)
        {
            if (r <= maxReduction && window.Width / r >= width && window.Height / r >= height)
            {
                best = r;
            }
        }
        return best;
    }

    /// <summary>Maps a window on the full-size image onto the image reduced by <paramref name="reduction"/>.</summary>
    /// <remarks>Edges are rounded to the nearest reduced pixel and clipped to the reduced size.</remarks>
    public static CropBox ScaleWindow(CropBox window, int reduction, int reducedWidth, int reducedHeight)
    {
        if (reduction == 1)
        {
            return window;
        }
        int x0 = (int)Math.Round((double)window.X / reduction);
        int y0 = (int)Math.Round((double)window.Y / reduction);
        int x1 = Math.Min(reducedWidth, (int)Math.Round((double)(window.X + window.Width) / reduction));
        int y1 = Math.Min(reducedHeight, (int)Math.Round((double)(window.Y + window.Height) / reduction));
        x0 = Math.Min(x0, x1 - 1);
        y0 = Math.Min(y0, y1 - 1);
        return new CropBox(x0, y0, x1 - x0, y1 - y0);
    }

    private static ReadOnlySpan<byte> PngSignature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    private readonly record struct TurboJpegHeader(int Width, int Height, int Colorspace);

    private static unsafe TurboJpegHeader ReadTurboHeader(ReadOnlySpan<byte> data, string source)
    {
        TurboJpegDecompressor decompressor = TurboJpegDecompressor.ForCurrentThread();
        fixed (byte* jpeg = data)
        {
            int rc = TurboJpegNative.DecompressHeader3(decompressor, jpeg, (nuint)data.Length, out int width, out int height, out _, out int colorspace);
            ThrowIfFailed(rc, decompressor, source);
            if (width <= 0 || height <= 0)
            {
                throw Invalid(source, "JPEG", $"the header declares {width}x{height}");
            }
            return new TurboJpegHeader(width, height, colorspace);
        }
    }

    private static unsafe RgbImage DecodeTurbo(ReadOnlySpan<byte> data, string source, int reduction)
    {
        TurboJpegHeader header = ReadTurboHeader(data, source);
        if (header.Colorspace is TurboJpegNative.ColorspaceCmyk or TurboJpegNative.ColorspaceYcck)
        {
            return SkiaImageDecoder.Decode(data, source, ImageFormat.Jpeg);
        }
        int width = (header.Width + reduction - 1) / reduction;
        int height = (header.Height + reduction - 1) / reduction;
        RgbImage image = RentFor(source, "JPEG", width, height);
        try
        {
            TurboJpegDecompressor decompressor = TurboJpegDecompressor.ForCurrentThread();
            fixed (byte* jpeg = data)
            fixed (byte* pixels = image.Buffer)
            {
                int rc = TurboJpegNative.Decompress2(
                    decompressor, jpeg, (nuint)data.Length, pixels, width, image.Stride, height, TurboJpegNative.PixelFormatRgb, flags: 0);
                ThrowIfFailed(rc, decompressor, source);
            }
            return image;
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    private static void ThrowIfFailed(int rc, TurboJpegDecompressor decompressor, string source)
    {
        if (rc == 0)
        {
            return;
        }
        string message = decompressor.LastError();
        bool fatal = TurboJpegNative.GetErrorCode(decompressor) == TurboJpegNative.ErrorFatal;
        if (fatal || !IsBenignWarning(message))
        {
            throw Invalid(source, "JPEG", message);
        }
    }

    /// <summary>
    /// libjpeg warnings about data that is complete and decodes as meant: stray bytes between segments and
    /// out-of-spec scan parameters some cameras write. Every other warning (a truncated file, a corrupt
    /// entropy-coded segment, a bad Huffman code) means the pixels are partly made up, so it is an error.
    /// </summary>
    private static bool IsBenignWarning(string message) =>
        message.Contains("extraneous bytes before marker", StringComparison.OrdinalIgnoreCase)
        || message.Contains("Invalid SOS parameters for sequential JPEG", StringComparison.OrdinalIgnoreCase);

    /// <summary>Rents an image for a decoder, turning an impossible size into a data error.</summary>
    internal static RgbImage RentFor(string source, string format, int width, int height)
    {
        if (width > RgbImage.MaxDimension || height > RgbImage.MaxDimension || (long)width * height * 3 + RgbImage.Slack > Array.MaxLength)
        {
            throw Invalid(source, format, $"{width}x{height} pixels is larger than Kiln decodes");
        }
        return RgbImage.Rent(width, height);
    }

    /// <summary>The exception for bad data, naming where it came from.</summary>
    internal static InvalidDataException Invalid(string source, string format, string reason) =>
        new($"Cannot decode {format} image '{source}': {reason}. The file is corrupt or truncated; re-encode or drop it.");

    private static InvalidDataException UnknownFormat(ReadOnlySpan<byte> data, string source)
    {
        string start = data.IsEmpty ? "it is empty" : $"it starts with {Convert.ToHexString(data[..Math.Min(8, data.Length)])}";
        return new InvalidDataException($"Cannot decode '{source}': not a JPEG or PNG image ({start}). Kiln decodes JPEG and PNG.");
    }
}
