namespace Kiln.Data.Imaging;

/// <summary>A rectangle of whole pixels: left column <see cref="X"/>, top row <see cref="Y"/>, and its size.</summary>
/// <param name="X">Left column (torchvision's <c>left</c>, <c>j</c>).</param>
/// <param name="Y">Top row (torchvision's <c>top</c>, <c>i</c>).</param>
/// <param name="Width">Columns (torchvision's <c>w</c>).</param>
/// <param name="Height">Rows (torchvision's <c>h</c>).</param>
internal readonly record struct CropBox(int X, int Y, int Width, int Height)
{
    /// <summary>Whether the box is non-empty and lies inside a <paramref name="width"/> x <paramref name="height"/> image.</summary>
    public bool FitsIn(int width, int height) =>
        Width > 0 && Height > 0 && X >= 0 && Y >= 0 && (long)X + Width <= width && (long)Y + Height <= height;

    /// <summary>Throws unless the box fits inside <paramref name="image"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The box is empty or reaches outside the image.</exception>
    public void EnsureFitsIn(RgbImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (!FitsIn(image.Width, image.Height))
        {
            throw new ArgumentOutOfRangeException(nameof(image), $"Crop box {this} does not fit a {image.Width}x{image.Height} image.");
        }
    }
}
