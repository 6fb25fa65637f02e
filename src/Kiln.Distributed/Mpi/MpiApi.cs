using System.Text;
using Kiln.Runtime.Native;
using TorchSharp;

namespace Kiln.Distributed.Mpi;

/// <summary>
/// The slice of Open MPI's C API Kiln calls, bound by hand: functions from the library's exports, and the predefined
/// handles (communicators, datatypes, ops) as the addresses of Open MPI's global objects — Open MPI's MPI_Comm,
/// MPI_Datatype and MPI_Op are pointers to them (<c>&amp;ompi_mpi_comm_world</c>), unlike MPICH's integer handles.
/// </summary>
internal sealed unsafe class MpiApi
{
    /// <summary>Open MPI's MPI_IN_PLACE: <c>(void *) 1</c>.</summary>
    public static readonly IntPtr InPlace = 1;

    /// <summary>MPI_THREAD_SERIALIZED: any thread may call MPI, one at a time.</summary>
    public const int ThreadSerialized = 2;

    /// <summary>Open MPI's MPI_UNDEFINED.</summary>
    public const int Undefined = -32766;

    private readonly NativeLibraryHandle _library;

    public MpiApi(NativeLibraryHandle library)
    {
        _library = library;
        Initialized = (delegate* unmanaged<int*, int>)Require(library, "MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)Require(library, "MPI_Finalized");
        InitThread = (delegate* unmanaged<int*, byte***, int, int*, int>)Require(library, "MPI_Init_thread");
        Finalize = (delegate* unmanaged<int>)Require(library, "MPI_Finalize");
        CommRank = (delegate* unmanaged<IntPtr, int*, int>)Require(library, "MPI_Comm_rank");
        CommSize = (delegate* unmanaged<IntPtr, int*, int>)Require(library, "MPI_Comm_size");
        Allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Require(library, "MPI_Allreduce");
        Iallreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int>)Require(library, "MPI_Iallreduce");
        Wait = (delegate* unmanaged<IntPtr*, IntPtr, int>)Require(library, "MPI_Wait");
        Test = (delegate* unmanaged<IntPtr*, int*, IntPtr, int>)Require(library, "MPI_Test");
        Bcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int>)Require(library, "MPI_Bcast");
        Ibcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, IntPtr*, int>)Require(library, "MPI_Ibcast");
        Iallgather = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int>)Require(library, "MPI_Iallgather");
        IreduceScatterBlock = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int>)Require(library, "MPI_Ireduce_scatter_block");
        Allgather = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, int>)Require(library, "MPI_Allgather");
        ReduceScatterBlock = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Require(library, "MPI_Reduce_scatter_block");
        Barrier = (delegate* unmanaged<IntPtr, int>)Require(library, "MPI_Barrier");
        Alltoall = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, int>)Require(library, "MPI_Alltoall");
        Ialltoall = (delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int>)Require(library, "MPI_Ialltoall");
        CommSplit = (delegate* unmanaged<IntPtr, int, int, IntPtr*, int>)Require(library, "MPI_Comm_split");
        CommFree = (delegate* unmanaged<IntPtr*, int>)Require(library, "MPI_Comm_free");
        Send = (delegate* unmanaged<IntPtr, int, IntPtr, int, int, IntPtr, int>)Require(library, "MPI_Send");
        Recv = (delegate* unmanaged<IntPtr, int, IntPtr, int, int, IntPtr, IntPtr, int>)Require(library, "MPI_Recv");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)Require(library, "MPI_Error_string");
        Abort = (delegate* unmanaged<IntPtr, int, int>)Require(library, "MPI_Abort");

        CommWorld = Require(library, "ompi_mpi_comm_world");
        CommNull = Require(library, "ompi_mpi_comm_null");
        Float = Require(library, "ompi_mpi_float");
        Double = Require(library, "ompi_mpi_double");
        Int32 = Require(library, "ompi_mpi_int32_t");
        Int64 = Require(library, "ompi_mpi_int64_t");
        Int16 = Require(library, "ompi_mpi_int16_t");
        Int8 = Require(library, "ompi_mpi_int8_t");
        UInt8 = Require(library, "ompi_mpi_uint8_t");
        OpSum = Require(library, "ompi_mpi_op_sum");
        OpMin = Require(library, "ompi_mpi_op_min");
        OpMax = Require(library, "ompi_mpi_op_max");
        OpProd = Require(library, "ompi_mpi_op_prod");
    }

    public delegate* unmanaged<int*, int> Initialized { get; }
    public delegate* unmanaged<int*, int> Finalized { get; }
    public delegate* unmanaged<int*, byte***, int, int*, int> InitThread { get; }
    public delegate* unmanaged<int> Finalize { get; }
    public delegate* unmanaged<IntPtr, int*, int> CommRank { get; }
    public delegate* unmanaged<IntPtr, int*, int> CommSize { get; }
    public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> Allreduce { get; }
    public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int> Iallreduce { get; }

    /// <summary>MPI_Wait(request, status); Open MPI's MPI_STATUS_IGNORE is a null pointer.</summary>
    public delegate* unmanaged<IntPtr*, IntPtr, int> Wait { get; }

    /// <summary>MPI_Test(request, flag, status).</summary>
    public delegate* unmanaged<IntPtr*, int*, IntPtr, int> Test { get; }

    public delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int> Bcast { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, IntPtr*, int> Ibcast { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int> Iallgather { get; }
    public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, IntPtr*, int> IreduceScatterBlock { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, int> Allgather { get; }
    public delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> ReduceScatterBlock { get; }
    public delegate* unmanaged<IntPtr, int> Barrier { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, int> Alltoall { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr*, int> Ialltoall { get; }

    /// <summary>MPI_Comm_split(comm, color, key, newcomm): <see cref="Undefined"/> as the color leaves a rank out (MPI_COMM_NULL).</summary>
    public delegate* unmanaged<IntPtr, int, int, IntPtr*, int> CommSplit { get; }
    public delegate* unmanaged<IntPtr*, int> CommFree { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, int, int, IntPtr, int> Send { get; }
    public delegate* unmanaged<IntPtr, int, IntPtr, int, int, IntPtr, IntPtr, int> Recv { get; }
    public delegate* unmanaged<int, byte*, int*, int> ErrorString { get; }
    public delegate* unmanaged<IntPtr, int, int> Abort { get; }

    public IntPtr CommWorld { get; }

    /// <summary>MPI_COMM_NULL: what MPI_Comm_split gives a rank left out.</summary>
    public IntPtr CommNull { get; }
    public IntPtr Float { get; }
    public IntPtr Double { get; }
    public IntPtr Int32 { get; }
    public IntPtr Int64 { get; }
    public IntPtr Int16 { get; }
    public IntPtr Int8 { get; }
    public IntPtr UInt8 { get; }
    public IntPtr OpSum { get; }
    public IntPtr OpMin { get; }
    public IntPtr OpMax { get; }
    public IntPtr OpProd { get; }

    /// <summary>The library, kept open while MPI is in use.</summary>
    public NativeLibraryHandle Library => _library;

    private static IntPtr Require(NativeLibraryHandle library, string symbol) =>
        library.Export(symbol) is var address && address != IntPtr.Zero
            ? address
            : throw new DistributedException($"{library.Name} does not export {symbol}; Kiln needs Open MPI 4 or newer");

    /// <summary>The MPI datatype of a TorchSharp dtype.</summary>
    /// <exception cref="NotSupportedException">MPI has no such type (float16, bfloat16, complex, bool).</exception>
    public IntPtr Datatype(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float32 => Float,
        torch.ScalarType.Float64 => Double,
        torch.ScalarType.Int32 => Int32,
        torch.ScalarType.Int64 => Int64,
        torch.ScalarType.Int8 => Int8,
        torch.ScalarType.Byte => UInt8,
        torch.ScalarType.Float16 or torch.ScalarType.BFloat16 => throw new NotSupportedException(
            $"The mpi backend cannot reduce {dtype} tensors directly: MPI has no 16-bit floating-point type."),
        _ => throw new NotSupportedException($"The mpi backend does not support {dtype} tensors."),
    };

    /// <summary>
    /// The MPI datatype that moves a TorchSharp dtype's bits unchanged (broadcast, gather, send): float16 and bfloat16
    /// travel as 16-bit integers.
    /// </summary>
    public IntPtr MovingDatatype(torch.ScalarType dtype) =>
        IsHalf(dtype) ? Int16 : Datatype(dtype);

    /// <summary>Whether MPI lacks the dtype for arithmetic: float16 and bfloat16.</summary>
    public static bool IsHalf(torch.ScalarType dtype) =>
        dtype is torch.ScalarType.Float16 or torch.ScalarType.BFloat16;

    /// <summary>The MPI op of a <see cref="ReduceOp"/>; <see cref="ReduceOp.Average"/> reduces with a sum.</summary>
    public IntPtr Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum or ReduceOp.Average => OpSum,
        ReduceOp.Min => OpMin,
        ReduceOp.Max => OpMax,
        ReduceOp.Product => OpProd,
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "unknown reduce op"),
    };

    /// <summary>Throws when an MPI call returned an error code other than MPI_SUCCESS (0).</summary>
    public void Check(int code, string function)
    {
        if (code == 0)
        {
            return;
        }
        // MPI_MAX_ERROR_STRING is 256 in Open MPI.
        byte* buffer = stackalloc byte[1024];
        int length = 0;
        string text = ErrorString(code, buffer, &length) == 0
            ? Encoding.ASCII.GetString(buffer, Math.Clamp(length, 0, 1024))
            : "unknown error";
        throw new DistributedException($"{function} failed with MPI error {code}: {text}");
    }
}
