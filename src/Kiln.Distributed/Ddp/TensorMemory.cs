using Kiln.Runtime.Native;
using TorchSharp;

namespace Kiln.Distributed;

/// <summary>Where a tensor's first element lives (LibTorchSharp's <c>THSTensor_data</c>); TorchSharp does not expose it.</summary>
internal static unsafe class TensorMemory
{
    private static readonly Lazy<(NativeLibraryHandle Library, IntPtr Data)> s_torchSharp = new(() =>
    {
        NativeLibraryHandle library = NativeLibraryHandle.TryOpen(["libLibTorchSharp.so", Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"), "LibTorchSharp"])
            ?? throw new DistributedException("LibTorchSharp is not loaded");
        IntPtr data = library.Export("THSTensor_data");
        return data != IntPtr.Zero ? (library, data) : throw new DistributedException($"{library.Name} does not export THSTensor_data");
    });

    /// <summary>The address of the tensor's first element (its storage's address plus the storage offset).</summary>
    public static long Address(torch.Tensor tensor) => (long)((delegate* unmanaged<IntPtr, IntPtr>)s_torchSharp.Value.Data)(tensor.Handle);
}
