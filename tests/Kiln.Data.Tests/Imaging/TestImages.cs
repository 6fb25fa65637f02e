using Kiln.Data.Imaging;
using SkiaSharp;

namespace Kiln.Data.Tests.Imaging;

/// <summary>Images made in the test: random noise, coordinate ramps, and their encodings through SkiaSharp.</summary>
internal static class TestImages
{
    public static RgbImage Noise(int width, int height, int seed)
    {
        var bytes = new byte[width * height * 3];
        new Random(seed).NextBytes(bytes);
        return RgbImage.FromPixels(bytes, width, height);
    }

    /// <summary>Pixel (x, y) is (x, y, x + y) mod 256: every pixel says where it came from.</summary>
    public static RgbImage Coordinates(int width, int height)
    {
        RgbImage image = RgbImage.Rent(width, height);
        for (int y = 0; y < height; y++)
        {
            Span<byte> row = image.Row(y);
            for (int x = 0; x < width; x++)
            {
                row[x * 3] = (byte)x;
                row[(x * 3) + 1] = (byte)y;
                row[(x * 3) + 2] = (byte)(x + y);
            }
        }
        return image;
    }

    public static RgbImage Solid(int width, int height, byte r, byte g, byte b)
    {
        RgbImage image = RgbImage.Rent(width, height);
        Span<byte> pixels = image.Pixels;
        for (int i = 0; i < pixels.Length; i += 3)
        {
            pixels[i] = r;
            pixels[i + 1] = g;
            pixels[i + 2] = b;
        }
        return image;
    }

    /// <summary>Encodes RGB pixels (alpha 255) with SkiaSharp.</summary>
    public static byte[] Encode(RgbImage image, SKEncodedImageFormat format, int quality = 100)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        Span<byte> rgba = bitmap.GetPixelSpan();
        ReadOnlySpan<byte> rgb = image.Pixels;
        for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
        {
            rgba[j] = rgb[i];
            rgba[j + 1] = rgb[i + 1];
            rgba[j + 2] = rgb[i + 2];
            rgba[j + 3] = 255;
        }
        return EncodeBitmap(bitmap, format, quality);
    }

    public static byte[] EncodeBitmap(SKBitmap bitmap, SKEncodedImageFormat format, int quality = 100)
    {
        using SKData data = bitmap.Encode(format, quality) ?? throw new InvalidOperationException($"SkiaSharp could not encode {format}.");
        return data.ToArray();
    }

    public static byte[] Bytes(RgbImage image) => image.Pixels.ToArray();
}
