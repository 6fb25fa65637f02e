using SkiaSharp;

namespace Kiln.Serve.Tests;

/// <summary>Deterministic 224×224 test pictures (gradients and stripes) encoded losslessly as PNG.</summary>
internal static class Images
{
    public const int Size = 224;

    public static byte[] Pixels(int seed)
    {
        var random = new Random(seed);
        byte[] rgba = new byte[Size * Size * 4];
        for (int y = 0; y < Size; y++)
        {
            for (int x = 0; x < Size; x++)
            {
                int i = ((y * Size) + x) * 4;
                rgba[i] = (byte)((x * seed) % 256);
                rgba[i + 1] = (byte)(((y / 8) % 2 == 0) ? 220 : 30);
                rgba[i + 2] = (byte)random.Next(256);
                rgba[i + 3] = 255;
            }
        }
        return rgba;
    }

    public static byte[] Png(int seed)
    {
        byte[] rgba = Pixels(seed);
        using var bitmap = new SKBitmap(new SKImageInfo(Size, Size, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bitmap.GetPixels(), rgba.Length);
        using SKData data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>The [1,3,224,224] planar RGB 0..255 tensor of <see cref="Pixels"/>.</summary>
    public static float[] Planar(int seed)
    {
        byte[] rgba = Pixels(seed);
        const int Plane = Size * Size;
        float[] planar = new float[3 * Plane];
        for (int p = 0; p < Plane; p++)
        {
            for (int c = 0; c < 3; c++)
            {
                planar[(c * Plane) + p] = rgba[(p * 4) + c];
            }
        }
        return planar;
    }
}
