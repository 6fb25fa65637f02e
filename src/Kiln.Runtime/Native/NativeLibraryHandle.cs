using System.Runtime.InteropServices;

namespace Kiln.Runtime.Native;

/// <summary>A shared library opened with <see cref="NativeLibrary"/>, closed when disposed.</summary>
internal sealed class NativeLibraryHandle : SafeHandle
{
    private NativeLibraryHandle(IntPtr handle, string name)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(handle);
        Name = name;
    }

    /// <summary>The name or path the library was opened by.</summary>
    public string Name { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Opens the first of <paramref name="candidates"/> that loads, or returns null.</summary>
    public static NativeLibraryHandle? TryOpen(IEnumerable<string> candidates)
    {
        foreach (string candidate in candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out IntPtr h))
            {
                return new NativeLibraryHandle(h, candidate);
            }
        }
        return null;
    }

    /// <summary>The address of an exported function, or zero when the library lacks it.</summary>
    public IntPtr Export(string symbol) =>
        NativeLibrary.TryGetExport(handle, symbol, out IntPtr address) ? address : IntPtr.Zero;

    /// <summary>The path the dynamic loader resolved this library to, read from /proc/self/maps.</summary>
    /// <remarks>Matched on the name up to ".so": libcuda.so.1 is a link to a file such as libcuda.so.580.95.05.</remarks>
    public string ResolvedPath
    {
        get
        {
            string fileName = Path.GetFileName(Name);
            int so = fileName.IndexOf(".so", StringComparison.Ordinal);
            return LoadedLibraries.FindPath(so < 0 ? fileName : fileName[..(so + 3)]) ?? Name;
        }
    }

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        NativeLibrary.Free(handle);
        return true;
    }
}
