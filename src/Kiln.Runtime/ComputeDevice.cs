namespace Kiln.Runtime;

/// <summary>The kinds of device Kiln runs tensor work on.</summary>
public enum DeviceKind
{
    /// <summary>The host's processors.</summary>
    Cpu,

    /// <summary>An NVIDIA GPU through CUDA.</summary>
    Cuda,
}

/// <summary>One device of this host.</summary>
/// <param name="Kind">CPU or CUDA.</param>
/// <param name="Index">The device ordinal (0 for the CPU).</param>
/// <param name="Name">The model name the hardware reports.</param>
/// <param name="MemoryBytes">Memory the device offers: host memory available to this process, or GPU memory.</param>
public sealed record ComputeDevice(DeviceKind Kind, int Index, string Name, long MemoryBytes)
{
    /// <summary>The device in PyTorch's notation: "cpu" or "cuda:0".</summary>
    public string TorchName => Kind == DeviceKind.Cpu ? "cpu" : $"cuda:{Index}";

    /// <inheritdoc />
    public override string ToString() => $"{TorchName} {Name} ({MemoryBytes / (1024.0 * 1024 * 1024):F1} GiB)";
}
