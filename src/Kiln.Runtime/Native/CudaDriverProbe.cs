using System.Text;

namespace Kiln.Runtime.Native;

/// <summary>Asks the CUDA driver (libcuda.so.1) for its version and its devices.</summary>
internal static class CudaDriverProbe
{
    public sealed record Result(NativeComponent Driver, IReadOnlyList<ComputeDevice> Devices);

    public static unsafe Result Probe()
    {
        using NativeLibraryHandle? lib = NativeLibraryHandle.TryOpen(["libcuda.so.1"]);
        if (lib is null)
        {
            return new Result(new NativeComponent("CUDA driver", null, null, "libcuda.so.1 not found (no NVIDIA driver)"), []);
        }
        var init = (delegate* unmanaged<uint, int>)lib.Export("cuInit");
        var driverVersion = (delegate* unmanaged<int*, int>)lib.Export("cuDriverGetVersion");
        var count = (delegate* unmanaged<int*, int>)lib.Export("cuDeviceGetCount");
        var get = (delegate* unmanaged<int*, int, int>)lib.Export("cuDeviceGet");
        var name = (delegate* unmanaged<byte*, int, int, int>)lib.Export("cuDeviceGetName");
        var totalMem = (delegate* unmanaged<nuint*, int, int>)lib.Export("cuDeviceTotalMem_v2");
        if (init == null || driverVersion == null || count == null || get == null || name == null || totalMem == null)
        {
            return new Result(new NativeComponent("CUDA driver", lib.ResolvedPath, null, "libcuda.so.1 lacks the driver API"), []);
        }
        int status = init(0);
        if (status != 0)
        {
            return new Result(new NativeComponent("CUDA driver", lib.ResolvedPath, null, $"cuInit failed with CUresult {status}"), []);
        }
        int version = 0, n = 0;
        driverVersion(&version);
        count(&n);
        var devices = new List<ComputeDevice>(n);
        byte* buffer = stackalloc byte[256];
        for (int i = 0; i < n; i++)
        {
            int device = 0;
            nuint bytes = 0;
            if (get(&device, i) != 0 || name(buffer, 256, device) != 0)
            {
                continue;
            }
            totalMem(&bytes, device);
            string deviceName = Encoding.ASCII.GetString(buffer, new ReadOnlySpan<byte>(buffer, 256).IndexOf((byte)0));
            devices.Add(new ComputeDevice(DeviceKind.Cuda, i, deviceName, (long)bytes));
        }
        string text = $"CUDA {version / 1000}.{version % 1000 / 10}";
        return new Result(new NativeComponent("CUDA driver", lib.ResolvedPath, text, null), devices);
    }
}
