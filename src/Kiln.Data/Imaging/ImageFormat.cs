namespace Kiln.Data.Imaging;

/// <summary>The encoded image formats <see cref="ImageDecoder"/> reads, told apart by their first bytes.</summary>
internal enum ImageFormat
{
    /// <summary>Neither of the others.</summary>
    Unknown,

    /// <summary>JPEG: starts with FF D8 FF.</summary>
    Jpeg,

    /// <summary>PNG: starts with 89 50 4E 47 0D 0A 1A 0A.</summary>
    Png,
}

/// <summary>What an image's header says: its format and full-resolution size.</summary>
/// <param name="Format">The encoded format.</param>
/// <param name="Width">Pixels per row.</param>
/// <param name="Height">Rows.</param>
internal readonly record struct ImageHeader(ImageFormat Format, int Width, int Height);
