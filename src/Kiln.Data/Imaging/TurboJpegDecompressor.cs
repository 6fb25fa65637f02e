using System.Reflection;
using System.Runtime.InteropServices;

namespace Kiln.Data.Imaging;

/// <summary>A TurboJPEG decompressor instance (a <c>tjhandle</c>), destroyed with <c>tjDestroy</c>.</summary>
/// <remarks>
/// One instance is not thread-safe; <see cref="ForCurrentThread"/> keeps one per thread, released by the
/// safe handle's finalizer when the thread ends.
/// </remarks>
internal sealed class TurboJpegDecompressor : SafeHandle
{
    [ThreadStatic]
    private static TurboJpegDecompressor? s_threadInstance;

    private static readonly Lazy<bool> s_isAvailable = new(Probe);

    /// <summary>Called by the interop marshaller for <c>tjInitDecompress</c>'s result.</summary>
    public TurboJpegDecompressor()
        : base(IntPtr.Zero, ownsHandle: true)
    {
    }

    /// <summary>Whether libturbojpeg.so.0 loads in this process.</summary>
    public static bool IsAvailable => s_isAvailable.Value;

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>This thread's decompressor, created on first use.</summary>
    /// <exception cref="InvalidOperationException">tjInitDecompress failed.</exception>
    public static TurboJpegDecompressor ForCurrentThread()
    {
        TurboJpegDecompressor? instance = s_threadInstance;
        if (instance is null || instance.IsClosed)
        {
            instance = TurboJpegNative.InitDecompress();
            if (instance.IsInvalid)
            {
                instance.Dispose();
                throw new InvalidOperationException($"tjInitDecompress in {TurboJpegNative.LibraryName} returned no decompressor.");
            }
            s_threadInstance = instance;
        }
        return instance;
    }

    /// <summary>TurboJPEG's message for the last failure of this instance.</summary>
    public string LastError()
    {
        nint message = TurboJpegNative.GetErrorStr2(this);
        return message == IntPtr.Zero ? "unknown error" : Marshal.PtrToStringUTF8(message) ?? "unknown error";
    }

    /// <inheritdoc />
    protected override bool ReleaseHandle() => TurboJpegNative.Destroy(handle) == 0;

    private static bool Probe()
    {
        if (NativeLibrary.TryLoad(TurboJpegNative.LibraryName, Assembly.GetExecutingAssembly(), searchPath: null, out IntPtr library))
        {
            // The handle stays open for the process: the P/Invokes resolve the same library.
            return NativeLibrary.TryGetExport(library, "tjDecompress2", out _);
        }
        return false;
    }
}
