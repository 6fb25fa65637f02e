namespace Kiln.Runtime;

/// <summary>Where the libtorch this process runs on came from.</summary>
public enum LibTorchSource
{
    /// <summary>The CPU libtorch bundled with the application from the TorchSharp-cpu package.</summary>
    Bundled,

    /// <summary>A libtorch outside the application: <c>KILN_LIBTORCH_DIR</c> or an installed PyTorch.</summary>
    External,
}

/// <summary>The libtorch actually loaded into this process.</summary>
/// <param name="Path">The file of libtorch_cpu.so the loader mapped.</param>
/// <param name="Version">libtorch's version, e.g. "2.10.0" or "2.11.0+cu130".</param>
/// <param name="Source">Bundled or external.</param>
/// <param name="CudaDevices">How many CUDA devices libtorch can use; 0 for a CPU build or without GPUs.</param>
/// <param name="CudaProblem">Why CUDA is not in use when the host or the libtorch would suggest it; else null.</param>
public sealed record LibTorchInfo(string Path, string Version, LibTorchSource Source, int CudaDevices, string? CudaProblem)
{
    /// <summary>True when libtorch has CUDA and sees at least one device.</summary>
    public bool CudaAvailable => CudaDevices > 0;
}
