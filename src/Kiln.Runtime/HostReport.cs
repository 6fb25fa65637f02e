using System.Reflection;
using System.Runtime.InteropServices;
using Kiln.Runtime.Native;
using TorchSharp;

namespace Kiln.Runtime;

/// <summary>
/// The facts <c>kiln doctor</c> prints: runtimes, libraries and devices this process can use. A missing
/// optional part becomes a fact that says so, never an exception.
/// </summary>
public static class HostReport
{
    /// <summary>Kiln's version (the informational version of this assembly, without a source hash).</summary>
    public static string KilnVersion => InformationalVersion(typeof(HostReport).Assembly);

    /// <summary>Yields the facts one by one, each as soon as it is known.</summary>
    /// <remarks>Loads libtorch through <see cref="TorchRuntime.EnsureInitialized"/> with <paramref name="options"/>.</remarks>
    public static IEnumerable<HostFact> Collect(TorchRuntimeOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        yield return new HostFact(".NET runtime", $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})");
        yield return new HostFact("kiln", KilnVersion);
        yield return new HostFact("os", RuntimeInformation.OSDescription);
        DeviceCatalog devices = DeviceCatalog.Current;
        yield return new HostFact("cpu", $"{devices.Cpu.Name}, {devices.CpuCores} cores");
        yield return new HostFact("memory", $"{Gib(devices.Cpu.MemoryBytes)} available to this process");
        cancellationToken.ThrowIfCancellationRequested();

        yield return new HostFact("torchsharp", InformationalVersion(typeof(torch).Assembly));
        yield return LibTorchFact(options, out LibTorchInfo? libtorch);
        yield return libtorch switch
        {
            null => new HostFact("libtorch cuda", "unknown (libtorch did not load)", false),
            { CudaAvailable: true } => new HostFact("libtorch cuda", $"yes, {libtorch.CudaDevices} device(s)"),
            { CudaProblem: { } why } => new HostFact("libtorch cuda", $"no ({why})", false),
            _ => new HostFact("libtorch cuda", "no (CPU host)"),
        };
        cancellationToken.ThrowIfCancellationRequested();

        yield return new HostFact("cuda driver", devices.CudaDriver.ToString(), devices.CudaDriver.IsAvailable);
        foreach (ComputeDevice device in devices.All)
        {
            yield return new HostFact("device", device.ToString());
        }
        yield return OnnxRuntimeFact();
        cancellationToken.ThrowIfCancellationRequested();

        NativeComponent mpi = MpiProbe.Probe();
        yield return new HostFact("mpi", mpi.ToString(), mpi.IsAvailable);
        NativeComponent nccl = NcclProbe.Probe(options.NcclDirectory);
        yield return new HostFact("nccl", nccl.ToString(), nccl.IsAvailable);
    }

    private static HostFact LibTorchFact(TorchRuntimeOptions options, out LibTorchInfo? info)
    {
        try
        {
            info = TorchRuntime.EnsureInitialized(options);
            string kind = File.Exists(Path.Combine(Path.GetDirectoryName(info.Path) ?? "", "libtorch_cuda.so")) ? "CUDA" : "CPU";
            string source = info.Source == LibTorchSource.Bundled ? "bundled" : "external";
            return new HostFact("libtorch", $"{info.Version}, {kind} build, {source} ({info.Path})");
        }
        catch (KilnRuntimeException ex)
        {
            info = null;
            return new HostFact("libtorch", $"not loaded ({ex.Message})", false);
        }
    }

    private static HostFact OnnxRuntimeFact()
    {
        try
        {
            return new HostFact("onnxruntime", $"{OnnxSessionFactory.Version} ({string.Join(", ", OnnxSessionFactory.AvailableProviders)})");
        }
        catch (Exception ex) when (ex is DllNotFoundException or TypeInitializationException or EntryPointNotFoundException)
        {
            return new HostFact("onnxruntime", $"not loaded ({ex.Message})", false);
        }
    }

    private static string InformationalVersion(Assembly assembly)
    {
        string? version = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        version ??= assembly.GetName().Version?.ToString() ?? "unknown";
        int plus = version.IndexOf('+', StringComparison.Ordinal);
        return plus < 0 ? version : version[..plus];
    }

    private static string Gib(long bytes) => $"{bytes / (1024.0 * 1024 * 1024):F1} GiB";
}
