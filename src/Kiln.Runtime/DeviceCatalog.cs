using Kiln.Runtime.Native;

namespace Kiln.Runtime;

/// <summary>
/// The one place that says which devices this host has: the CPU, and the GPUs the CUDA driver reports.
/// </summary>
/// <remarks>
/// Discovery asks the driver directly (libcuda), so it works before and without libtorch. Whether
/// libtorch can use the GPUs is a separate question, answered by <see cref="TorchRuntime"/>.
/// </remarks>
public sealed class DeviceCatalog
{
    private static readonly Lazy<DeviceCatalog> s_current = new(Discover, LazyThreadSafetyMode.ExecutionAndPublication);

    private DeviceCatalog(ComputeDevice cpu, int cpuCores, IReadOnlyList<ComputeDevice> gpus, NativeComponent cudaDriver)
    {
        Cpu = cpu;
        CpuCores = cpuCores;
        Gpus = gpus;
        CudaDriver = cudaDriver;
    }

    /// <summary>The devices of this host, discovered once per process.</summary>
    public static DeviceCatalog Current => s_current.Value;

    /// <summary>The host's processors as one device.</summary>
    public ComputeDevice Cpu { get; }

    /// <summary>Logical processors available to this process.</summary>
    public int CpuCores { get; }

    /// <summary>The CUDA devices, in driver order; empty without an NVIDIA driver.</summary>
    public IReadOnlyList<ComputeDevice> Gpus { get; }

    /// <summary>The CUDA driver, or why there is none.</summary>
    public NativeComponent CudaDriver { get; }

    /// <summary>Every device: the CPU first, then the GPUs.</summary>
    public IEnumerable<ComputeDevice> All => Gpus.Prepend(Cpu);

    private static DeviceCatalog Discover()
    {
        CudaDriverProbe.Result cuda = CudaDriverProbe.Probe();
        long memory = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        var cpu = new ComputeDevice(DeviceKind.Cpu, 0, CpuModelName(), memory);
        return new DeviceCatalog(cpu, Environment.ProcessorCount, cuda.Devices, cuda.Driver);
    }

    private static string CpuModelName()
    {
        const string CpuInfo = "/proc/cpuinfo";
        if (File.Exists(CpuInfo))
        {
            foreach (string line in File.ReadLines(CpuInfo))
            {
                if (line.StartsWith("model name", StringComparison.Ordinal))
                {
                    return line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
                }
            }
        }
        return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
    }
}
