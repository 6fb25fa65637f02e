using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Kiln.Runtime.Native;
using TorchSharp;

namespace Kiln.Runtime;

/// <summary>
/// Loads libtorch into this process once: the CUDA libtorch of an installed PyTorch where there is one
/// (or the folder <see cref="TorchRuntimeOptions.LibTorchDirectory"/> names), else the CPU libtorch
/// bundled from NuGet; then initialises CUDA when present.
/// </summary>
/// <remarks>
/// Call <see cref="EnsureInitialized"/> before the first TorchSharp call. A process holds one libtorch:
/// the options of the first call win and later calls return the same <see cref="LibTorchInfo"/>.
/// Thread-safe.
/// </remarks>
public static partial class TorchRuntime
{
    private static readonly Lock s_gate = new();
    private static LibTorchInfo? s_info;

    /// <summary>The libtorch loaded so far, or null before <see cref="EnsureInitialized"/>.</summary>
    public static LibTorchInfo? Current => Volatile.Read(ref s_info);

    /// <summary>Loads libtorch (once per process) and says which one runs.</summary>
    /// <exception cref="KilnRuntimeException">No usable libtorch: the message names the folder and the fix.</exception>
    public static LibTorchInfo EnsureInitialized(TorchRuntimeOptions? options = null)
    {
        if (Volatile.Read(ref s_info) is { } info)
        {
            return info;
        }
        lock (s_gate)
        {
            s_info ??= Load(options ?? new TorchRuntimeOptions());
            return s_info;
        }
    }

    private static LibTorchInfo Load(TorchRuntimeOptions options)
    {
        string? bundled = BundledLibTorch();
        string? external = options.LibTorchDirectory;
        if (external is not null)
        {
            if (!File.Exists(Path.Combine(external, "libtorch_cpu.so")))
            {
                throw new KilnRuntimeException(
                    $"{TorchRuntimeOptions.LibTorchDirectoryVariable}={external}: no libtorch_cpu.so there; point it at a PyTorch install's torch/lib folder.");
            }
            if (bundled is not null)
            {
                throw new KilnRuntimeException(
                    $"{TorchRuntimeOptions.LibTorchDirectoryVariable}={external}, but this build also bundles the CPU libtorch ({bundled}); " +
                    "two libtorch copies cannot share a process. Publish without the bundle (../shared/scripts/device-pack.sh) to use an external libtorch.");
            }
        }
        else if (options.ProbePython && bundled is null)
        {
            external = FindPythonLibTorch(options.PythonExecutable);
        }
        else if (options.ProbePython && FindPythonLibTorch(options.PythonExecutable) is { } python && File.Exists(Path.Combine(python, "libtorch_cuda.so")))
        {
            // A CUDA PyTorch is installed, but this build carries its own CPU libtorch, which wins.
            return LoadBundled(bundled!, $"a CUDA PyTorch is installed at {python}, but this build bundles the CPU libtorch; publish with device-pack.sh to use it");
        }

        if (external is null)
        {
            if (bundled is null)
            {
                throw new KilnRuntimeException(
                    $"No libtorch: this build does not bundle one, {TorchRuntimeOptions.LibTorchDirectoryVariable} is not set, and no PyTorch was found through python3.");
            }
            return LoadBundled(bundled, cudaProblem: null);
        }
        return LoadExternal(external, options);
    }

    private static LibTorchInfo LoadBundled(string bundled, string? cudaProblem)
    {
        InitializeCpu();
        string path = LoadedLibraries.FindPath("libtorch_cpu.so") ?? bundled;
        return new LibTorchInfo(path, VersionOf(path), LibTorchSource.Bundled, 0,
            cudaProblem ?? (DeviceCatalog.Current.Gpus.Count > 0 ? "the bundled libtorch is CPU-only" : null));
    }

    private static LibTorchInfo LoadExternal(string directory, TorchRuntimeOptions options)
    {
        // Loading by full path first makes every later load by name (TorchSharp's, and the NEEDED entries of
        // libLibTorchSharp.so) resolve to these files through their sonames, with no LD_LIBRARY_PATH.
        string[] order = ["libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so"];
        foreach (string file in order)
        {
            string full = Path.Combine(directory, file);
            if (File.Exists(full) && !NativeLibrary.TryLoad(full, out _))
            {
                throw new KilnRuntimeException($"{full} exists but does not load (a missing dependency or a different architecture).");
            }
        }
        InitializeCpu();
        int cudaDevices = 0;
        string? cudaProblem = null;
        bool hasCuda = File.Exists(Path.Combine(directory, "libtorch_cuda.so"));
        if (!hasCuda)
        {
            cudaProblem = DeviceCatalog.Current.Gpus.Count > 0 ? $"the libtorch in {directory} is CPU-only" : null;
        }
        else if (!options.InitializeCuda)
        {
            cudaProblem = "CUDA initialisation was turned off";
        }
        else
        {
            try
            {
                torch.InitializeDeviceType(DeviceType.CUDA);
                cudaDevices = torch.cuda.is_available() ? torch.cuda.device_count() : 0;
                if (cudaDevices == 0)
                {
                    cudaProblem = $"libtorch has CUDA but sees no device ({DeviceCatalog.Current.CudaDriver})";
                }
            }
            catch (Exception ex) when (ex is NotSupportedException or ExternalException or DllNotFoundException)
            {
                cudaProblem = $"CUDA initialisation failed: {FirstLine(ex.Message)}";
            }
        }
        string path = LoadedLibraries.FindPath("libtorch_cpu.so") ?? Path.Combine(directory, "libtorch_cpu.so");
        return new LibTorchInfo(path, VersionOf(path), LibTorchSource.External, cudaDevices, cudaProblem);
    }

    private static void InitializeCpu()
    {
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
        }
        catch (Exception ex) when (ex is TypeInitializationException or NotSupportedException or DllNotFoundException or ExternalException)
        {
            Exception cause = ex is TypeInitializationException { InnerException: { } inner } ? inner : ex;
            throw new KilnRuntimeException($"libtorch does not load: {FirstLine(cause.Message)}", ex);
        }
    }

    /// <summary>The CPU libtorch this application carries, or null (a GPU-host package leaves it out).</summary>
    private static string? BundledLibTorch()
    {
        string baseDir = AppContext.BaseDirectory;
        string[] candidates =
        [
            Path.Combine(baseDir, "libtorch_cpu.so"),
            Path.Combine(baseDir, "runtimes", "linux-x64", "native", "libtorch_cpu.so"),
        ];
        return Array.Find(candidates, File.Exists);
    }

    /// <summary>Asks Python where PyTorch keeps libtorch; null when there is no Python or no PyTorch.</summary>
    internal static string? FindPythonLibTorch(string python)
    {
        var start = new ProcessStartInfo(python)
        {
            ArgumentList = { "-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        try
        {
            using Process? process = Process.Start(start);
            if (process is null)
            {
                return null;
            }
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
            {
                process.Kill();
                return null;
            }
            string dir = stdout.GetAwaiter().GetResult().Trim();
            return process.ExitCode == 0 && File.Exists(Path.Combine(dir, "libtorch_cpu.so")) ? dir : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    /// <summary>libtorch's version, read from the PyTorch install or libtorch distribution around the file.</summary>
    internal static string VersionOf(string libtorchPath)
    {
        string? lib = Path.GetDirectoryName(libtorchPath);
        string? parent = lib is null ? null : Path.GetDirectoryName(lib);
        if (parent is not null)
        {
            string versionPy = Path.Combine(parent, "version.py");
            if (File.Exists(versionPy) && VersionAssignment().Match(File.ReadAllText(versionPy)) is { Success: true } m)
            {
                return m.Groups[1].Value;
            }
            string buildVersion = Path.Combine(parent, "build-version");
            if (File.Exists(buildVersion))
            {
                return File.ReadAllText(buildVersion).Trim();
            }
        }
        // The bundle is the libtorch TorchSharp was built against.
        return NormalizeBundleVersion(torch.__version__);
    }

    private static string NormalizeBundleVersion(string version) =>
        version.EndsWith(".0", StringComparison.Ordinal) && version.Count(c => c == '.') == 3 ? version[..^2] : version;

    private static string FirstLine(string message)
    {
        string trimmed = message.Trim();
        int newline = trimmed.IndexOf('\n', StringComparison.Ordinal);
        return newline < 0 ? trimmed : trimmed[..newline];
    }

    [GeneratedRegex(@"^__version__\s*=\s*['""]([^'""]+)['""]", RegexOptions.Multiline)]
    private static partial Regex VersionAssignment();
}
