using System.Runtime.CompilerServices;

namespace Kiln.Data.Imaging;

/// <summary>
/// Geometric transforms on <see cref="RgbImage"/>s with torchvision's semantics (see docs/data-imaging.md).
/// </summary>
/// <remarks>
/// Every method that returns an image returns a new one the caller owns; the input is never disposed or
/// changed, except by <see cref="FlipHorizontallyInPlace"/>.
/// </remarks>
internal static class ImageTransforms
{
    /// <summary>Copies <paramref name="box"/> out of <paramref name="image"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The box does not fit inside the image.</exception>
    public static RgbImage Crop(RgbImage image, CropBox box)
    {
        ArgumentNullException.ThrowIfNull(image);
        box.EnsureFitsIn(image);
        return Resampler.Resize(image, box, box.Width, box.Height, flip: false);
    }

    /// <summary>
    /// The central <paramref name="width"/> x <paramref name="height"/> region, as torchvision's
    /// <c>CenterCrop</c>: top = <c>round((H - h) / 2)</c>, left = <c>round((W - w) / 2)</c> (half to even);
    /// where the crop is larger than the image, the image is centred (offset <c>(w - W) / 2</c>, rounded
    /// down) on black.
    /// </summary>
    public static RgbImage CenterCrop(RgbImage image, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        if (width <= image.Width && height <= image.Height)
        {
            int left = (int)Math.Round((image.Width - width) / 2.0, MidpointRounding.ToEven);
            int top = (int)Math.Round((image.Height - height) / 2.0, MidpointRounding.ToEven);
            return Crop(image, new CropBox(left, top, width, height));
        }

        // torchvision pads (left = (w - W) / 2, top = (h - H) / 2, rounded down) with zeros, then crops centrally.
        RgbImage result = RgbImage.Rent(width, height);
        result.Pixels.Clear();
        int padLeft = Math.Max(0, (width - image.Width) / 2);
        int padTop = Math.Max(0, (height - image.Height) / 2);
        int sourceLeft = width < image.Width ? (int)Math.Round((image.Width - width) / 2.0, MidpointRounding.ToEven) : 0;
        int sourceTop = height < image.Height ? (int)Math.Round((image.Height - height) / 2.0, MidpointRounding.ToEven) : 0;
        int copyWidth = Math.Min(width, image.Width);
        int copyHeight = Math.Min(height, image.Height);
        for (int y = 0; y < copyHeight; y++)
        {
            image.Row(sourceTop + y).Slice(sourceLeft * 3, copyWidth * 3).CopyTo(result.Row(padTop + y)[(padLeft * 3)..]);
        }
        return result;
    }

    /// <summary>Resizes the whole image to <paramref name="width"/> x <paramref name="height"/> (antialiased bilinear).</summary>
    public static RgbImage Resize(RgbImage image, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(image);
        return Resampler.Resize(image, new CropBox(0, 0, image.Width, image.Height), width, height, flip: false);
    }

    /// <summary>
    /// Resizes so the shorter side becomes <paramref name="size"/>, keeping the aspect ratio as torchvision's
    /// <c>Resize(int)</c> does: the longer side becomes <c>(int)(size * long / short)</c> (truncated).
    /// </summary>
    public static RgbImage ResizeShorterSide(RgbImage image, int size)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        (int width, int height) = image.Width <= image.Height
            ? (size, (int)((long)size * image.Height / image.Width))
            : ((int)((long)size * image.Width / image.Height), size);
        return Resize(image, Math.Max(1, width), Math.Max(1, height));
    }

    /// <summary>
    /// Crops <paramref name="box"/> and resizes it to <paramref name="width"/> x <paramref name="height"/> in
    /// one pass (only the window is read), then mirrors it when <paramref name="flip"/> is set: the same
    /// pixels as torchvision's <c>resized_crop</c> followed by <c>hflip</c>.
    /// </summary>
    public static RgbImage ResizedCrop(RgbImage image, CropBox box, int width, int height, bool flip = false) =>
        Resampler.Resize(image, box, width, height, flip);

    /// <summary>Mirrors the image left-right, in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void FlipHorizontallyInPlace(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        for (int y = 0; y < image.Height; y++)
        {
            Span<byte> row = image.Row(y);
            for (int left = 0, right = image.Width - 1; left < right; left++, right--)
            {
                int l = left * 3, r = right * 3;
                (row[l], row[r]) = (row[r], row[l]);
                (row[l + 1], row[r + 1]) = (row[r + 1], row[l + 1]);
                (row[l + 2], row[r + 2]) = (row[r + 2], row[l + 2]);
            }
        }
    }
}
