using System.Buffers;
using System.Runtime.CompilerServices;
using SkiaSharp;

namespace Kiln.Data.Imaging;

/// <summary>Decodes through SkiaSharp's codecs: PNG, and JPEG where libjpeg-turbo cannot.</summary>
internal static class SkiaImageDecoder
{
    /// <summary>Reads the size from the header.</summary>
    /// <exception cref="InvalidDataException">SkiaSharp cannot read the header.</exception>
    public static ImageHeader ReadHeader(ReadOnlySpan<byte> data, string source, ImageFormat format)
    {
        using SKData skData = SKData.CreateCopy(data);
        using SKCodec codec = Open(skData, source, format);
        return new ImageHeader(format, codec.Info.Width, codec.Info.Height);
    }

    /// <summary>Decodes to RGB at full size: alpha dropped, 16-bit samples reduced to 8, no colour management.</summary>
    /// <exception cref="InvalidDataException">Corrupt or truncated data.</exception>
    public static unsafe RgbImage Decode(ReadOnlySpan<byte> data, string source, ImageFormat format)
    {
        using SKData skData = SKData.CreateCopy(data);
        using SKCodec codec = Open(skData, source, format);
        int width = codec.Info.Width;
        int height = codec.Info.Height;
        string name = Name(format);
        RgbImage image = ImageDecoder.RentFor(source, name, width, height);
        long rgbaLength = (long)width * height * 4;
        if (rgbaLength > Array.MaxLength)
        {
            image.Dispose();
            throw ImageDecoder.Invalid(source, name, $"{width}x{height} pixels is larger than Kiln decodes");
        }
        byte[] rgba = ArrayPool<byte>.Shared.Rent((int)rgbaLength);
        try
        {
            // Unpremultiplied, no colour space: the stored RGB values come through as they are.
            var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
            fixed (byte* pixels = rgba)
            {
                SKCodecResult result = codec.GetPixels(info, (IntPtr)pixels);
                if (result != SKCodecResult.Success)
                {
                    throw ImageDecoder.Invalid(source, name, $"SkiaSharp reports {result}");
                }
            }
            PackRgb(rgba.AsSpan(0, (int)rgbaLength), image.Pixels);
            return image;
        }
        catch
        {
            image.Dispose();
            throw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rgba);
        }
    }

    private static SKCodec Open(SKData data, string source, ImageFormat format)
    {
        SKCodec? codec = SKCodec.Create(data);
        if (codec is null)
        {
            throw ImageDecoder.Invalid(source, Name(format), "SkiaSharp cannot read its header");
        }
        if (codec.Info.Width <= 0 || codec.Info.Height <= 0)
        {
            codec.Dispose();
            throw ImageDecoder.Invalid(source, Name(format), $"the header declares {codec.Info.Width}x{codec.Info.Height}");
        }
        return codec;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackRgb(ReadOnlySpan<byte> rgba, Span<byte> rgb)
    {
        int pixels = rgb.Length / 3;
        for (int i = 0; i < pixels; i++)
        {
            rgb[i * 3] = rgba[i * 4];
            rgb[(i * 3) + 1] = rgba[(i * 4) + 1];
            rgb[(i * 3) + 2] = rgba[(i * 4) + 2];
        }
    }

    private static string Name(ImageFormat format) => format == ImageFormat.Png ? "PNG" : "JPEG";
}
