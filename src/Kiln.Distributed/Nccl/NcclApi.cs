using System.Runtime.InteropServices;
using Kiln.Runtime.Native;
using TorchSharp;

namespace Kiln.Distributed.Nccl;

/// <summary>
/// The slice of NCCL's C API (<c>nccl.h</c>) and the CUDA runtime that Kiln calls, bound by hand from
/// <c>libnccl.so.2</c> and <c>libcudart</c>, plus LibTorchSharp's <c>THSTensor_data</c> for a tensor's device pointer.
/// </summary>
internal sealed unsafe class NcclApi
{
    /// <summary>cudaErrorNotReady: the work before an event is still running.</summary>
    public const int CudaErrorNotReady = 600;

    /// <summary>ncclInProgress: a non-blocking operation is still running (not an error).</summary>
    public const int NcclInProgress = 7;

    /// <summary>NCCL_UNIQUE_ID_BYTES.</summary>
    public const int UniqueIdBytes = 128;

    public NcclApi(NativeLibraryHandle nccl, NativeLibraryHandle cudart, NativeLibraryHandle torchSharp)
    {
        Nccl = nccl;
        CudaRuntime = cudart;
        TorchSharp = torchSharp;
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)Require(nccl, "ncclGetUniqueId");
        CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int>)Require(nccl, "ncclCommInitRank");
        CommDestroy = (delegate* unmanaged<IntPtr, int>)Require(nccl, "ncclCommDestroy");
        CommAbort = (delegate* unmanaged<IntPtr, int>)Require(nccl, "ncclCommAbort");
        CommSplit = (delegate* unmanaged<IntPtr, int, int, IntPtr*, IntPtr, int>)Require(nccl, "ncclCommSplit");
        CommGetAsyncError = (delegate* unmanaged<IntPtr, int*, int>)Require(nccl, "ncclCommGetAsyncError");
        GetErrorString = (delegate* unmanaged<int, IntPtr>)Require(nccl, "ncclGetErrorString");
        GetLastError = (delegate* unmanaged<IntPtr, IntPtr>)Require(nccl, "ncclGetLastError");
        AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Require(nccl, "ncclAllReduce");
        Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Require(nccl, "ncclBroadcast");
        AllGather = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, IntPtr, int>)Require(nccl, "ncclAllGather");
        ReduceScatter = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Require(nccl, "ncclReduceScatter");
        Send = (delegate* unmanaged<IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Require(nccl, "ncclSend");
        GroupStart = (delegate* unmanaged<int>)Require(nccl, "ncclGroupStart");
        GroupEnd = (delegate* unmanaged<int>)Require(nccl, "ncclGroupEnd");
        Recv = (delegate* unmanaged<IntPtr, nuint, int, int, IntPtr, IntPtr, int>)Require(nccl, "ncclRecv");

        SetDevice = (delegate* unmanaged<int, int>)Require(cudart, "cudaSetDevice");
        StreamSynchronize = (delegate* unmanaged<IntPtr, int>)Require(cudart, "cudaStreamSynchronize");
        CudaErrorString = (delegate* unmanaged<int, IntPtr>)Require(cudart, "cudaGetErrorString");
        StreamCreateWithFlags = (delegate* unmanaged<IntPtr*, uint, int>)Require(cudart, "cudaStreamCreateWithFlags");
        StreamDestroy = (delegate* unmanaged<IntPtr, int>)Require(cudart, "cudaStreamDestroy");
        EventCreateWithFlags = (delegate* unmanaged<IntPtr*, uint, int>)Require(cudart, "cudaEventCreateWithFlags");
        EventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)Require(cudart, "cudaEventRecord");
        EventDestroy = (delegate* unmanaged<IntPtr, int>)Require(cudart, "cudaEventDestroy");
        EventQuery = (delegate* unmanaged<IntPtr, int>)Require(cudart, "cudaEventQuery");
        StreamWaitEvent = (delegate* unmanaged<IntPtr, IntPtr, uint, int>)Require(cudart, "cudaStreamWaitEvent");

        TensorData = (delegate* unmanaged<IntPtr, IntPtr>)Require(torchSharp, "THSTensor_data");
    }

    public NativeLibraryHandle Nccl { get; }
    public NativeLibraryHandle CudaRuntime { get; }
    public NativeLibraryHandle TorchSharp { get; }

    public delegate* unmanaged<NcclUniqueId*, int> GetUniqueId { get; }
    public delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int> CommInitRank { get; }
    public delegate* unmanaged<IntPtr, int> CommDestroy { get; }
    public delegate* unmanaged<IntPtr, int> CommAbort { get; }

    /// <summary>ncclCommSplit(comm, color, key, newcomm, config): <see cref="SplitNoColor"/> leaves a rank out (newcomm NULL).</summary>
    public delegate* unmanaged<IntPtr, int, int, IntPtr*, IntPtr, int> CommSplit { get; }

    /// <summary>NCCL_SPLIT_NOCOLOR.</summary>
    public const int SplitNoColor = -1;

    public delegate* unmanaged<IntPtr, int*, int> CommGetAsyncError { get; }
    public delegate* unmanaged<int, IntPtr> GetErrorString { get; }
    public delegate* unmanaged<IntPtr, IntPtr> GetLastError { get; }
    public delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> AllReduce { get; }
    public delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> Broadcast { get; }
    public delegate* unmanaged<IntPtr, IntPtr, nuint, int, IntPtr, IntPtr, int> AllGather { get; }
    public delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> ReduceScatter { get; }
    public delegate* unmanaged<IntPtr, nuint, int, int, IntPtr, IntPtr, int> Send { get; }

    /// <summary>ncclGroupStart/ncclGroupEnd: the point-to-point calls between them run as one operation.</summary>
    public delegate* unmanaged<int> GroupStart { get; }
    public delegate* unmanaged<int> GroupEnd { get; }

    public delegate* unmanaged<IntPtr, nuint, int, int, IntPtr, IntPtr, int> Recv { get; }
    public delegate* unmanaged<int, int> SetDevice { get; }
    public delegate* unmanaged<IntPtr, int> StreamSynchronize { get; }
    public delegate* unmanaged<int, IntPtr> CudaErrorString { get; }
    public delegate* unmanaged<IntPtr*, uint, int> StreamCreateWithFlags { get; }
    public delegate* unmanaged<IntPtr, int> StreamDestroy { get; }
    public delegate* unmanaged<IntPtr*, uint, int> EventCreateWithFlags { get; }
    public delegate* unmanaged<IntPtr, IntPtr, int> EventRecord { get; }
    public delegate* unmanaged<IntPtr, int> EventDestroy { get; }
    public delegate* unmanaged<IntPtr, int> EventQuery { get; }
    public delegate* unmanaged<IntPtr, IntPtr, uint, int> StreamWaitEvent { get; }
    public delegate* unmanaged<IntPtr, IntPtr> TensorData { get; }

    /// <summary>Opens libnccl.so.2 (from <paramref name="ncclDirectory"/> first), the CUDA runtime libtorch loaded, and LibTorchSharp.</summary>
    public static NcclApi Open(string? ncclDirectory)
    {
        var ncclCandidates = new List<string>();
        if (!string.IsNullOrEmpty(ncclDirectory))
        {
            ncclCandidates.Add(Path.Combine(ncclDirectory, "libnccl.so.2"));
        }
        ncclCandidates.Add("libnccl.so.2");
        NativeLibraryHandle nccl = NativeLibraryHandle.TryOpen(ncclCandidates)
            ?? throw new DistributedException("libnccl.so.2 is not on the loader path; install NCCL (PyTorch's nvidia-nccl wheel or the system package) and set KILN_NCCL_DIR or LD_LIBRARY_PATH.");
        // By soname, dlopen returns the CUDA runtime libtorch already loaded.
        NativeLibraryHandle cudart = NativeLibraryHandle.TryOpen(["libcudart.so.13", "libcudart.so.12", "libcudart.so"])
            ?? throw Dispose(nccl, "no CUDA runtime (libcudart.so.13 or .12) is loaded; the nccl backend needs a CUDA libtorch");
        NativeLibraryHandle torchSharp = NativeLibraryHandle.TryOpen(["libLibTorchSharp.so", Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so")])
            ?? throw Dispose(nccl, "libLibTorchSharp.so is not loaded");
        try
        {
            return new NcclApi(nccl, cudart, torchSharp);
        }
        catch
        {
            nccl.Dispose();
            cudart.Dispose();
            torchSharp.Dispose();
            throw;
        }

        static DistributedException Dispose(NativeLibraryHandle library, string message)
        {
            library.Dispose();
            return new DistributedException(message);
        }
    }

    /// <summary>Throws a <see cref="DistributedException"/> naming the call and NCCL's reason for a non-zero result.</summary>
    public void Check(int result, string call, IntPtr comm)
    {
        if (result == 0)
        {
            return;
        }
        string reason = Marshal.PtrToStringUTF8(GetErrorString(result)) ?? $"ncclResult_t {result}";
        string detail = comm != IntPtr.Zero ? Marshal.PtrToStringUTF8(GetLastError(comm)) ?? "" : "";
        throw new DistributedException($"{call} failed: {reason}{(detail.Length > 0 ? $" ({detail})" : "")}");
    }

    /// <summary>Throws a <see cref="DistributedException"/> for a CUDA runtime error.</summary>
    public void CheckCuda(int result, string call)
    {
        if (result != 0)
        {
            throw new DistributedException($"{call} failed: {Marshal.PtrToStringUTF8(CudaErrorString(result)) ?? $"cudaError_t {result}"}");
        }
    }

    /// <summary>NCCL's ncclDataType_t of a TorchSharp dtype.</summary>
    public static int Datatype(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Int8 => 0,
        torch.ScalarType.Byte => 1,
        torch.ScalarType.Int32 => 2,
        torch.ScalarType.Int64 => 4,
        torch.ScalarType.Float16 => 6,
        torch.ScalarType.Float32 => 7,
        torch.ScalarType.Float64 => 8,
        torch.ScalarType.BFloat16 => 9,
        _ => throw new NotSupportedException($"the nccl backend has no {dtype} tensors; it takes float32, float64, float16, bfloat16, int8, uint8, int32 and int64."),
    };

    /// <summary>NCCL's ncclRedOp_t.</summary>
    public static int Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum => 0,
        ReduceOp.Product => 1,
        ReduceOp.Max => 2,
        ReduceOp.Min => 3,
        ReduceOp.Average => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "unknown reduce op"),
    };

    private static IntPtr Require(NativeLibraryHandle library, string symbol) =>
        library.Export(symbol) is var address && address != IntPtr.Zero
            ? address
            : throw new DistributedException($"{library.Name} does not export {symbol}; Kiln needs NCCL 2.19 or newer and a CUDA 12/13 runtime");
}

/// <summary>ncclUniqueId: 128 opaque bytes, passed by value.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct NcclUniqueId
{
    public fixed byte Internal[NcclApi.UniqueIdBytes];
}
