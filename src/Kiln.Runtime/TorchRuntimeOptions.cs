namespace Kiln.Runtime;

/// <summary>Where <see cref="TorchRuntime"/> finds libtorch.</summary>
public sealed class TorchRuntimeOptions
{
    /// <summary>The environment variable that names a libtorch folder (a PyTorch install's <c>torch/lib</c>).</summary>
    public const string LibTorchDirectoryVariable = "KILN_LIBTORCH_DIR";

    /// <summary>The environment variable that names the folder of libnccl.so.2.</summary>
    public const string NcclDirectoryVariable = "KILN_NCCL_DIR";

    /// <summary>
    /// A folder holding libtorch_cpu.so (and libtorch_cuda.so for CUDA), used instead of the CPU libtorch
    /// bundled from NuGet. Default: null, meaning "look for a CUDA PyTorch, else use the bundle".
    /// </summary>
    public string? LibTorchDirectory { get; set; }

    /// <summary>
    /// Whether to ask <see cref="PythonExecutable"/> where an installed PyTorch keeps its libtorch when
    /// <see cref="LibTorchDirectory"/> is not set. Only a CUDA build of PyTorch is taken. Default: true.
    /// </summary>
    public bool ProbePython { get; set; } = true;

    /// <summary>The Python interpreter asked for PyTorch. Default: "python3".</summary>
    public string PythonExecutable { get; set; } = "python3";

    /// <summary>Initialise CUDA when the libtorch has it. Default: true.</summary>
    public bool InitializeCuda { get; set; } = true;

    /// <summary>The folder of libnccl.so.2, if not on the loader path. Default: null.</summary>
    public string? NcclDirectory { get; set; }

    /// <summary>Options read from <c>KILN_LIBTORCH_DIR</c> and <c>KILN_NCCL_DIR</c>; for hosts (the CLI) to call.</summary>
    public static TorchRuntimeOptions FromEnvironment() => new()
    {
        LibTorchDirectory = NullIfEmpty(Environment.GetEnvironmentVariable(LibTorchDirectoryVariable)),
        NcclDirectory = NullIfEmpty(Environment.GetEnvironmentVariable(NcclDirectoryVariable)),
    };

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
