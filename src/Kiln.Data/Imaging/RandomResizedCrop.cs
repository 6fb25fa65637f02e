namespace Kiln.Data.Imaging;

/// <summary>
/// torchvision's <c>RandomResizedCrop</c>: a random window of random area and aspect ratio, resized to a
/// fixed size (antialiased bilinear).
/// </summary>
/// <remarks>
/// <para>The window follows torchvision's <c>get_params</c>: up to ten attempts draw
/// <c>area = W * H * uniform(scale)</c> and <c>ratio = exp(uniform(log(ratio.min), log(ratio.max)))</c>,
/// take <c>w = round(sqrt(area * ratio))</c>, <c>h = round(sqrt(area / ratio))</c> (half to even, as
/// Python's <c>round</c>) and accept the first that fits, at a uniform position
/// (<c>top</c> in [0, H - h], <c>left</c> in [0, W - w]). If none fits, the fallback is the central crop
/// clamped to the ratio range: the whole image when its ratio is inside, else the widest or tallest
/// window with the nearest bound.</para>
/// <para>Random numbers come from a <see cref="SampleRandom"/> passed by the caller, so a window is a pure
/// function of (image size, stream state): seed it with <see cref="SampleRandom.ForSample"/> for results
/// that do not depend on threads or order. The draws differ from torch's generator, so the same seed does
/// not pick the same windows as torchvision; the distribution is the same.</para>
/// </remarks>
internal sealed class RandomResizedCrop
{
    /// <summary>A transform to <paramref name="width"/> x <paramref name="height"/> with torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).</summary>
    public RandomResizedCrop(int width, int height)
        : this(width, height, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0)
    {
    }

    /// <summary>A transform with explicit area-fraction and aspect-ratio (width / height) ranges.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or a range is empty, reversed or not positive.</exception>
    public RandomResizedCrop(int width, int height, double minScale, double maxScale, double minRatio, double maxRatio)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        if (!(minScale > 0) || !(maxScale >= minScale))
        {
            throw new ArgumentOutOfRangeException(nameof(minScale), $"Scale range ({minScale}, {maxScale}) must be positive and ordered.");
        }
        if (!(minRatio > 0) || !(maxRatio >= minRatio))
        {
            throw new ArgumentOutOfRangeException(nameof(minRatio), $"Ratio range ({minRatio}, {maxRatio}) must be positive and ordered.");
        }
        Width = width;
        Height = height;
        MinScale = minScale;
        MaxScale = maxScale;
        MinRatio = minRatio;
        MaxRatio = maxRatio;
    }

    /// <summary>Output width.</summary>
    public int Width { get; }

    /// <summary>Output height.</summary>
    public int Height { get; }

    /// <summary>Smallest window area as a fraction of the image's.</summary>
    public double MinScale { get; }

    /// <summary>Largest window area as a fraction of the image's.</summary>
    public double MaxScale { get; }

    /// <summary>Smallest window aspect ratio (width / height).</summary>
    public double MinRatio { get; }

    /// <summary>Largest window aspect ratio (width / height).</summary>
    public double MaxRatio { get; }

    /// <summary>Picks the window for an <paramref name="imageWidth"/> x <paramref name="imageHeight"/> image.</summary>
    public CropBox SampleWindow(int imageWidth, int imageHeight, ref SampleRandom random)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(imageWidth, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(imageHeight, 1);
        double area = (double)imageWidth * imageHeight;
        double logMin = Math.Log(MinRatio), logMax = Math.Log(MaxRatio);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double targetArea = area * random.NextDouble(MinScale, MaxScale);
            double ratio = Math.Exp(random.NextDouble(logMin, logMax));
            int w = (int)Math.Round(Math.Sqrt(targetArea * ratio), MidpointRounding.ToEven);
            int h = (int)Math.Round(Math.Sqrt(targetArea / ratio), MidpointRounding.ToEven);
            if (w > 0 && w <= imageWidth && h > 0 && h <= imageHeight)
            {
                int top = random.NextInt32(0, imageHeight - h + 1);
                int left = random.NextInt32(0, imageWidth - w + 1);
                return new CropBox(left, top, w, h);
            }
        }

        double inRatio = (double)imageWidth / imageHeight;
        int width, height;
        if (inRatio < MinRatio)
        {
            width = imageWidth;
            height = Math.Clamp((int)Math.Round(width / MinRatio, MidpointRounding.ToEven), 1, imageHeight);
        }
        else if (inRatio > MaxRatio)
        {
            height = imageHeight;
            width = Math.Clamp((int)Math.Round(height * MaxRatio, MidpointRounding.ToEven), 1, imageWidth);
        }
        else
        {
            width = imageWidth;
            height = imageHeight;
        }
        return new CropBox((imageWidth - width) / 2, (imageHeight - height) / 2, width, height);
    }

    /// <summary>
    /// Samples a window and resizes it to <see cref="Width"/> x <see cref="Height"/>, mirrored when
    /// <paramref name="flip"/> is set.
    /// </summary>
    /// <returns>A new image the caller owns.</returns>
    public RgbImage Apply(RgbImage image, ref SampleRandom random, bool flip = false)
    {
        ArgumentNullException.ThrowIfNull(image);
        CropBox window = SampleWindow(image.Width, image.Height, ref random);
        return Resampler.Resize(image, window, Width, Height, flip);
    }
}
