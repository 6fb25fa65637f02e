using System.Runtime.InteropServices;

namespace Kiln.Distributed.Mpi;

/// <summary>Open MPI's libmpi, opened with <see cref="NativeLibrary"/> and closed when released.</summary>
internal sealed class MpiLibraryHandle : SafeHandle
{
    private MpiLibraryHandle(IntPtr handle, string name)
        : base(IntPtr.Zero, ownsHandle: true)
    {
        SetHandle(handle);
        Name = name;
    }

    /// <summary>The name the library was opened by.</summary>
    public string Name { get; }

    /// <inheritdoc />
    public override bool IsInvalid => handle == IntPtr.Zero;

    /// <summary>Opens libmpi.so.40 (or libmpi.so), or returns null when neither loads.</summary>
    public static MpiLibraryHandle? TryOpen()
    {
        foreach (string candidate in (string[])["libmpi.so.40", "libmpi.so"])
        {
            if (NativeLibrary.TryLoad(candidate, out IntPtr h))
            {
                return new MpiLibraryHandle(h, candidate);
            }
        }
        return null;
    }

    /// <summary>The address of an exported symbol (a function, or one of Open MPI's predefined handle objects).</summary>
    /// <exception cref="DistributedException">The library lacks it.</exception>
    public IntPtr Export(string symbol) =>
        NativeLibrary.TryGetExport(handle, symbol, out IntPtr address)
            ? address
            : throw new DistributedException($"{Name} does not export {symbol}; Kiln needs Open MPI 4 or newer");

    /// <inheritdoc />
    protected override bool ReleaseHandle()
    {
        NativeLibrary.Free(handle);
        return true;
    }
}
