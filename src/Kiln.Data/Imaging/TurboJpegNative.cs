using System.Runtime.InteropServices;

namespace Kiln.Data.Imaging;

/// <summary>The few functions of libjpeg-turbo's TurboJPEG API (libturbojpeg.so.0, API 2.x) Kiln calls.</summary>
/// <remarks>Debian and Ubuntu ship the library as <c>libturbojpeg0</c>. <c>unsigned long</c> sizes are 64-bit on Linux x64.</remarks>
internal static partial class TurboJpegNative
{
    /// <summary>The soname the library is loaded by (the app folder first, then the loader's search path).</summary>
    public const string LibraryName = "libturbojpeg.so.0";

    /// <summary>TJPF_RGB: three bytes per pixel, R, G, B.</summary>
    public const int PixelFormatRgb = 0;

    /// <summary>TJERR_FATAL, from tjGetErrorCode: the operation failed (otherwise it was a warning).</summary>
    public const int ErrorFatal = 1;

    /// <summary>TJCS_CMYK and TJCS_YCCK: four-channel JPEGs that TurboJPEG 2.x cannot convert to RGB.</summary>
    public const int ColorspaceCmyk = 3;

    /// <inheritdoc cref="ColorspaceCmyk"/>
    public const int ColorspaceYcck = 4;

    [LibraryImport(LibraryName, EntryPoint = "tjInitDecompress")]
    public static partial TurboJpegDecompressor InitDecompress();

    [LibraryImport(LibraryName, EntryPoint = "tjDecompressHeader3")]
    public static unsafe partial int DecompressHeader3(
        TurboJpegDecompressor handle, byte* jpegBuf, nuint jpegSize, out int width, out int height, out int subsampling, out int colorspace);

    [LibraryImport(LibraryName, EntryPoint = "tjDecompress2")]
    public static unsafe partial int Decompress2(
        TurboJpegDecompressor handle, byte* jpegBuf, nuint jpegSize, byte* dstBuf, int width, int pitch, int height, int pixelFormat, int flags);

    [LibraryImport(LibraryName, EntryPoint = "tjGetErrorStr2")]
    public static partial nint GetErrorStr2(TurboJpegDecompressor handle);

    [LibraryImport(LibraryName, EntryPoint = "tjGetErrorCode")]
    public static partial int GetErrorCode(TurboJpegDecompressor handle);

    [LibraryImport(LibraryName, EntryPoint = "tjDestroy")]
    public static partial int Destroy(nint handle);
}
