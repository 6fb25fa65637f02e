using System.Text;

namespace Kiln.Runtime.Native;

/// <summary>Finds Open MPI's libmpi and asks it for its version (allowed before MPI_Init).</summary>
internal static class MpiProbe
{
    public static unsafe NativeComponent Probe()
    {
        using NativeLibraryHandle? lib = NativeLibraryHandle.TryOpen(["libmpi.so.40", "libmpi.so"]);
        if (lib is null)
        {
            return new NativeComponent("MPI", null, null, "libmpi.so.40 is not on the loader path; install Open MPI (Debian: openmpi-bin)");
        }
        var getLibraryVersion = (delegate* unmanaged<byte*, int*, int>)lib.Export("MPI_Get_library_version");
        var getVersion = (delegate* unmanaged<int*, int*, int>)lib.Export("MPI_Get_version");
        if (getLibraryVersion == null || getVersion == null)
        {
            return new NativeComponent("MPI", lib.ResolvedPath, null, "the library lacks MPI_Get_library_version");
        }
        // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI; leave room for other implementations.
        byte* buffer = stackalloc byte[8192];
        int length = 0, major = 0, minor = 0;
        if (getLibraryVersion(buffer, &length) != 0 || getVersion(&major, &minor) != 0)
        {
            return new NativeComponent("MPI", lib.ResolvedPath, null, "MPI_Get_library_version failed");
        }
        string text = Encoding.ASCII.GetString(buffer, Math.Clamp(length, 0, 8192)).TrimEnd('\0', '\n');
        int comma = text.IndexOf(',', StringComparison.Ordinal);
        string library = comma > 0 ? text[..comma] : text;
        return new NativeComponent("MPI", lib.ResolvedPath, $"{library}, MPI {major}.{minor}", null);
    }
}
