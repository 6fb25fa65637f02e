namespace Kiln.Runtime.Native;

/// <summary>Finds NCCL's libnccl.so.2 and asks it for its version.</summary>
internal static class NcclProbe
{
    public static unsafe NativeComponent Probe(string? directory)
    {
        var candidates = new List<string>();
        if (!string.IsNullOrEmpty(directory))
        {
            candidates.Add(System.IO.Path.Combine(directory, "libnccl.so.2"));
        }
        candidates.Add("libnccl.so.2");
        using NativeLibraryHandle? lib = NativeLibraryHandle.TryOpen(candidates);
        if (lib is null)
        {
            return new NativeComponent("NCCL", null, null,
                directory is null ? "libnccl.so.2 is not on the loader path" : $"no loadable libnccl.so.2 in {directory} or on the loader path");
        }
        var getVersion = (delegate* unmanaged<int*, int>)lib.Export("ncclGetVersion");
        int code = 0;
        if (getVersion == null || getVersion(&code) != 0)
        {
            return new NativeComponent("NCCL", lib.ResolvedPath, null, "ncclGetVersion failed");
        }
        return new NativeComponent("NCCL", lib.ResolvedPath, FormatVersion(code), null);
    }

    /// <summary>NCCL encodes its version as major*10000+minor*100+patch since 2.9 (major*1000+… before).</summary>
    internal static string FormatVersion(int code) =>
        code >= 10000
            ? $"{code / 10000}.{code / 100 % 100}.{code % 100}"
            : $"{code / 1000}.{code / 100 % 10}.{code % 100}";
}
