using System.Globalization;
using Kiln.Runtime;
using Kiln.Runtime.Native;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Kiln.Distributed.Mpi;

/// <summary>
/// The world of an Open MPI job, or a sub-group of it (<see cref="NewGroup"/>), as an <see cref="IProcessGroup"/>.
/// Collectives run in place on the memory of contiguous CPU tensors (no copies); calls are serialised with a lock
/// (MPI_THREAD_SERIALIZED). float16 and bfloat16 move as
/// 16-bit integers and reduce through a float32 copy (MPI has no 16-bit floats). A watchdog aborts the job when a call
/// runs longer than <see cref="ProcessGroupOptions.Timeout"/>.
/// </summary>
internal sealed unsafe partial class MpiProcessGroup : IProcessGroup
{
    /// <summary>The MPI_Abort error code (and so mpirun's exit code) when a call timed out.</summary>
    public const int TimeoutAbortCode = 124;

    private static readonly Lock CreateLock = new();
    private static bool s_created;

    private readonly MpiApi _mpi;
    private readonly bool _ownsInitialization;

    /// <summary>The world's communicator, or a sub-group's own (freed on Dispose).</summary>
    private readonly IntPtr _comm;
    private readonly bool _isSubGroup;

    /// <summary>One lock for the world and all its sub-groups: MPI_THREAD_SERIALIZED allows one MPI call at a time per process.</summary>
    private readonly Lock _callLock;
    private readonly CollectiveWatchdog _watchdog;
    private bool _disposed;

    private MpiProcessGroup(MpiApi mpi, IntPtr comm, int rank, int worldSize, bool ownsInitialization, ProcessGroupOptions options, Lock? callLock = null)
    {
        _mpi = mpi;
        _comm = comm;
        _isSubGroup = callLock is not null;
        _callLock = callLock ?? new Lock();
        Options = options;
        Rank = rank;
        WorldSize = worldSize;
        _ownsInitialization = ownsInitialization;
        _watchdog = new CollectiveWatchdog(options.Timeout, rank, worldSize, AbortJob);
    }

    /// <inheritdoc />
    public string Backend => "mpi";

    /// <summary>The settings the group was created with.</summary>
    public ProcessGroupOptions Options { get; }

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int WorldSize { get; }

    /// <summary>Initialises MPI (unless something else in the process already did) and returns the world group.</summary>
    public static MpiProcessGroup Create(ProcessGroupOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        lock (CreateLock)
        {
            if (s_created)
            {
                throw new DistributedException("An MPI process group was already created in this process; MPI initialises once per process.");
            }
            TorchRuntime.EnsureInitialized();
            NativeLibraryHandle library = NativeLibraryHandle.TryOpen(["libmpi.so.40", "libmpi.so"])
                ?? throw new DistributedException("libmpi.so.40 is not on the loader path; install Open MPI (Debian: openmpi-bin, libopenmpi3).");
            try
            {
                var mpi = new MpiApi(library);
                int flag = 0;
                mpi.Check(mpi.Finalized(&flag), "MPI_Finalized");
                if (flag != 0)
                {
                    throw new DistributedException("MPI was already finalised in this process and cannot be initialised again.");
                }
                mpi.Check(mpi.Initialized(&flag), "MPI_Initialized");
                bool owns = flag == 0;
                if (owns)
                {
                    int provided = 0;
                    mpi.Check(mpi.InitThread(null, null, MpiApi.ThreadSerialized, &provided), "MPI_Init_thread");
                    if (provided < MpiApi.ThreadSerialized)
                    {
                        // Kiln serialises its own calls, but may make them from any thread.
                        _ = mpi.Finalize();
                        throw new DistributedException($"MPI_Init_thread provided thread level {provided}; Kiln needs MPI_THREAD_SERIALIZED ({MpiApi.ThreadSerialized}).");
                    }
                }
                int rank = 0, size = 0;
                mpi.Check(mpi.CommRank(mpi.CommWorld, &rank), "MPI_Comm_rank");
                mpi.Check(mpi.CommSize(mpi.CommWorld, &size), "MPI_Comm_size");
                CheckLauncherEnvironment(rank, size);
                s_created = true;
                return new MpiProcessGroup(mpi, mpi.CommWorld, rank, size, owns, options);
            }
            catch
            {
                library.Dispose();
                throw;
            }
        }
    }

    /// <summary>Where a launcher (kiln launch, torchrun) set RANK and WORLD_SIZE, they must match what MPI says.</summary>
    internal static void CheckLauncherEnvironment(int rank, int size)
    {
        CheckVariable("RANK", rank);
        CheckVariable("WORLD_SIZE", size);

        static void CheckVariable(string name, int mpiValue)
        {
            string? text = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(text))
            {
                return;
            }
            if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
            {
                throw new DistributedException($"{name}={text} is not an integer.");
            }
            if (value != mpiValue)
            {
                throw new DistributedException(
                    $"{name}={value} from the launcher's environment, but MPI says {mpiValue}: start every rank with mpirun, " +
                    "or let the launcher and MPI agree on the world.");
            }
        }
    }

    /// <inheritdoc />
    public void AllReduce(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        _ = CheckTensor(tensor, nameof(tensor));
        if (MpiApi.IsHalf(tensor.dtype))
        {
            // MPI has no 16-bit floats: reduce a float32 copy, then round back into the tensor.
            using torch.Tensor staging = tensor.to_type(torch.ScalarType.Float32);
            AllReduce(staging, op);
            tensor.copy_(staging);
            return;
        }
        IntPtr datatype = _mpi.Datatype(tensor.dtype);
        IntPtr mpiOp = _mpi.Op(op);
        if (op == ReduceOp.Average && !tensor.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {tensor.dtype}.");
        }
        int count = Count(tensor);
        if (count > 0)
        {
            using (Call("all_reduce", count, tensor.dtype))
            {
                fixed (byte* data = tensor.bytes)
                {
                    _mpi.Check(_mpi.Allreduce(MpiApi.InPlace, (IntPtr)data, count, datatype, mpiOp, _comm), "MPI_Allreduce");
                }
            }
        }
        if (op == ReduceOp.Average && WorldSize > 1)
        {
            tensor.div_(WorldSize);
        }
    }

    /// <inheritdoc />
    public ICollectiveWork AllReduceAsync(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        _ = CheckTensor(tensor, nameof(tensor));
        int count = Count(tensor);
        if (MpiApi.IsHalf(tensor.dtype) || count == 0)
        {
            // A 16-bit float reduces through a float32 copy that must be rounded back afterwards: done at once.
            AllReduce(tensor, op);
            return CompletedCollectiveWork.Instance;
        }
        if (op == ReduceOp.Average && !tensor.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {tensor.dtype}.");
        }
        IntPtr request = IntPtr.Zero;
        using (Call("all_reduce", count, tensor.dtype))
        {
            fixed (byte* data = tensor.bytes)
            {
                // The storage is native memory that does not move; the caller keeps the tensor alive until Wait.
                _mpi.Check(_mpi.Iallreduce(MpiApi.InPlace, (IntPtr)data, count, _mpi.Datatype(tensor.dtype), _mpi.Op(op), _comm, &request), "MPI_Iallreduce");
            }
        }
        return new MpiWork(this, request, "all_reduce", tensor, op == ReduceOp.Average && WorldSize > 1 ? tensor : null);
    }

    /// <inheritdoc />
    public ICollectiveWork BroadcastAsync(torch.Tensor tensor, int root)
    {
        (IntPtr datatype, int count) = CheckBroadcast(tensor, root);
        if (count == 0)
        {
            return CompletedCollectiveWork.Instance;
        }
        IntPtr request = IntPtr.Zero;
        using (Call("broadcast", count, tensor.dtype))
        {
            fixed (byte* data = tensor.bytes)
            {
                _mpi.Check(_mpi.Ibcast((IntPtr)data, count, datatype, root, _comm, &request), "MPI_Ibcast");
            }
        }
        return new MpiWork(this, request, "broadcast", tensor, divide: null);
    }

    /// <inheritdoc />
    public ICollectiveWork AllGatherAsync(torch.Tensor input, torch.Tensor output)
    {
        (IntPtr datatype, int count) = CheckAllGather(input, output);
        if (count == 0)
        {
            return CompletedCollectiveWork.Instance;
        }
        IntPtr request = IntPtr.Zero;
        using (Call("all_gather", count, input.dtype))
        {
            fixed (byte* send = input.bytes)
            fixed (byte* receive = output.bytes)
            {
                _mpi.Check(_mpi.Iallgather((IntPtr)send, count, datatype, (IntPtr)receive, count, datatype, _comm, &request), "MPI_Iallgather");
            }
        }
        return new MpiWork(this, request, "all_gather", input, divide: null);
    }

    /// <inheritdoc />
    public ICollectiveWork ReduceScatterAsync(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        CheckPair(input, output);
        CollectiveArguments.ReduceScatterBlock(input, output, WorldSize);
        int count = Count(output);
        if (MpiApi.IsHalf(input.dtype) || count == 0)
        {
            // As AllReduceAsync: a 16-bit float reduces through float32 copies, done at once.
            ReduceScatter(input, output, op);
            return CompletedCollectiveWork.Instance;
        }
        if (op == ReduceOp.Average && !output.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {output.dtype}.");
        }
        IntPtr request = IntPtr.Zero;
        using (Call("reduce_scatter", input.numel(), input.dtype))
        {
            fixed (byte* send = input.bytes)
            fixed (byte* receive = output.bytes)
            {
                _mpi.Check(_mpi.IreduceScatterBlock((IntPtr)send, (IntPtr)receive, count, _mpi.Datatype(input.dtype), _mpi.Op(op), _comm, &request), "MPI_Ireduce_scatter_block");
            }
        }
        return new MpiWork(this, request, "reduce_scatter", input, op == ReduceOp.Average && WorldSize > 1 ? output : null);
    }

    /// <summary>
    /// A nonblocking MPI collective in flight; Wait blocks in MPI_Wait under the watchdog (named by
    /// <paramref name="operation"/> and <paramref name="tensor"/>), then divides <paramref name="divide"/> by the world
    /// size when the collective averages.
    /// </summary>
    private sealed class MpiWork(MpiProcessGroup group, IntPtr request, string operation, torch.Tensor tensor, torch.Tensor? divide) : ICollectiveWork
    {
        private IntPtr _request = request;
        private bool _done;

        public bool IsCompleted
        {
            get
            {
                lock (group._callLock)
                {
                    if (!_done)
                    {
                        group.ThrowIfDisposed();
                        int flag = 0;
                        IntPtr pending = _request;
                        group._mpi.Check(group._mpi.Test(&pending, &flag, IntPtr.Zero), "MPI_Test");
                        _request = pending;
                        if (flag != 0)
                        {
                            Finish();
                        }
                    }
                    return _done;
                }
            }
        }

        public void Wait()
        {
            if (IsCompleted)
            {
                return;
            }
            using (group.Call(operation, tensor.numel(), tensor.dtype))
            {
                if (_done)
                {
                    return;
                }
                IntPtr pending = _request;
                group._mpi.Check(group._mpi.Wait(&pending, IntPtr.Zero), "MPI_Wait");
                _request = pending;
                Finish();
            }
        }

        private void Finish()
        {
            _done = true;
            divide?.div_(group.WorldSize);
        }
    }

    /// <inheritdoc />
    public void Broadcast(torch.Tensor tensor, int root)
    {
        (IntPtr datatype, int count) = CheckBroadcast(tensor, root);
        if (count == 0)
        {
            return;
        }
        using (Call("broadcast", count, tensor.dtype))
        {
            fixed (byte* data = tensor.bytes)
            {
                _mpi.Check(_mpi.Bcast((IntPtr)data, count, datatype, root, _comm), "MPI_Bcast");
            }
        }
    }

    /// <inheritdoc />
    public void AllGather(torch.Tensor input, torch.Tensor output)
    {
        (IntPtr datatype, int count) = CheckAllGather(input, output);
        if (count == 0)
        {
            return;
        }
        using (Call("all_gather", count, input.dtype))
        {
            fixed (byte* send = input.bytes)
            fixed (byte* receive = output.bytes)
            {
                _mpi.Check(_mpi.Allgather((IntPtr)send, count, datatype, (IntPtr)receive, count, datatype, _comm), "MPI_Allgather");
            }
        }
    }

    /// <inheritdoc />
    public void ReduceScatter(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        CheckPair(input, output);
        if (MpiApi.IsHalf(input.dtype))
        {
            using torch.Tensor input32 = input.to_type(torch.ScalarType.Float32);
            using torch.Tensor output32 = output.to_type(torch.ScalarType.Float32);
            ReduceScatter(input32, output32, op);
            output.copy_(output32);
            return;
        }
        IntPtr datatype = _mpi.Datatype(input.dtype);
        IntPtr mpiOp = _mpi.Op(op);
        if (op == ReduceOp.Average && !output.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {output.dtype}.");
        }
        CollectiveArguments.ReduceScatterBlock(input, output, WorldSize);
        long total = input.numel();
        int count = Count(output);
        if (count > 0)
        {
            using (Call("reduce_scatter", total, input.dtype))
            {
                fixed (byte* send = input.bytes)
                fixed (byte* receive = output.bytes)
                {
                    _mpi.Check(_mpi.ReduceScatterBlock((IntPtr)send, (IntPtr)receive, count, datatype, mpiOp, _comm), "MPI_Reduce_scatter_block");
                }
            }
        }
        if (op == ReduceOp.Average && WorldSize > 1)
        {
            output.div_(WorldSize);
        }
    }

    /// <inheritdoc />
    public void AllToAll(torch.Tensor input, torch.Tensor output)
    {
        (IntPtr datatype, int block) = CheckAllToAll(input, output);
        if (block == 0)
        {
            return;
        }
        using (Call("all_to_all", input.numel(), input.dtype))
        {
            fixed (byte* send = input.bytes)
            fixed (byte* receive = output.bytes)
            {
                _mpi.Check(_mpi.Alltoall((IntPtr)send, block, datatype, (IntPtr)receive, block, datatype, _comm), "MPI_Alltoall");
            }
        }
    }

    /// <inheritdoc />
    public ICollectiveWork AllToAllAsync(torch.Tensor input, torch.Tensor output)
    {
        (IntPtr datatype, int block) = CheckAllToAll(input, output);
        if (block == 0)
        {
            return CompletedCollectiveWork.Instance;
        }
        IntPtr request = IntPtr.Zero;
        using (Call("all_to_all", input.numel(), input.dtype))
        {
            fixed (byte* send = input.bytes)
            fixed (byte* receive = output.bytes)
            {
                _mpi.Check(_mpi.Ialltoall((IntPtr)send, block, datatype, (IntPtr)receive, block, datatype, _comm, &request), "MPI_Ialltoall");
            }
        }
        return new MpiWork(this, request, "all_to_all", input, divide: null);
    }

    /// <summary>broadcast's checks: the moving datatype and the element count.</summary>
    private (IntPtr Datatype, int Count) CheckBroadcast(torch.Tensor tensor, int root)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(root, nameof(root));
        return (CheckTensor(tensor, nameof(tensor)), Count(tensor));
    }

    /// <summary>all_gather's checks: the moving datatype and the input's element count.</summary>
    private (IntPtr Datatype, int Count) CheckAllGather(torch.Tensor input, torch.Tensor output)
    {
        IntPtr datatype = CheckPair(input, output);
        int count = Count(input);
        CollectiveArguments.AllGatherOutput(count, output, WorldSize);
        return (datatype, count);
    }

    /// <summary>all_to_all's checks: the moving datatype and one block's element count.</summary>
    private (IntPtr Datatype, int Block) CheckAllToAll(torch.Tensor input, torch.Tensor output)
    {
        IntPtr datatype = CheckPair(input, output);
        _ = Count(input);
        int block = (int)CollectiveArguments.AllToAllBlock(input, output, WorldSize);
        fixed (byte* send = input.bytes)
        fixed (byte* receive = output.bytes)
        {
            if (block > 0 && send == receive)
            {
                throw new ArgumentException("all_to_all cannot run in place: give an output tensor other than the input.", nameof(output));
            }
        }
        return (datatype, block);
    }

    /// <inheritdoc />
    public void Barrier()
    {
        ThrowIfDisposed();
        using (Call("barrier", -1, default))
        {
            _mpi.Check(_mpi.Barrier(_comm), "MPI_Barrier");
        }
    }

    /// <inheritdoc />
    public void Send(torch.Tensor tensor, int destination, int tag = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(destination, nameof(destination));
        IntPtr datatype = CheckTensor(tensor, nameof(tensor));
        int count = Count(tensor);
        using (Call("send", count, tensor.dtype, destination))
        {
            fixed (byte* data = tensor.bytes)
            {
                _mpi.Check(_mpi.Send((IntPtr)data, count, datatype, destination, tag, _comm), "MPI_Send");
            }
        }
    }

    /// <inheritdoc />
    public void Recv(torch.Tensor tensor, int source, int tag = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(source, nameof(source));
        IntPtr datatype = CheckTensor(tensor, nameof(tensor));
        int count = Count(tensor);
        using (Call("recv", count, tensor.dtype, source))
        {
            fixed (byte* data = tensor.bytes)
            {
                // Open MPI's MPI_STATUS_IGNORE is a null pointer.
                _mpi.Check(_mpi.Recv((IntPtr)data, count, datatype, source, tag, _comm, IntPtr.Zero), "MPI_Recv");
            }
        }
    }

    /// <summary>
    /// The watchdog's end of a call that timed out: one line on stderr (and the logger), then MPI_Abort on the world,
    /// after which mpirun ends every rank.
    /// </summary>
    private void AbortJob(string description)
    {
        Console.Error.WriteLine($"Kiln.Distributed: {description}");
        if (Options.Logger is { } logger)
        {
            LogCollectiveTimedOut(logger, description);
        }
        _ = _mpi.Abort(_mpi.CommWorld, TimeoutAbortCode);
        // MPI_Abort does not return; should it, this rank still ends.
        Environment.Exit(TimeoutAbortCode);
    }

    [LoggerMessage(EventId = 1600, Level = LogLevel.Critical, Message = "{Description}")]
    private static partial void LogCollectiveTimedOut(ILogger logger, string description);

    /// <inheritdoc />
    public IProcessGroup? NewGroup(IReadOnlyList<int> ranks)
    {
        int[] members = CollectiveArguments.GroupRanks(ranks, WorldSize);
        ThrowIfDisposed();
        bool member = Array.IndexOf(members, Rank) >= 0;
        IntPtr comm = IntPtr.Zero;
        using (Call("new_group", -1, default))
        {
            // The key orders the new ranks as here.
            _mpi.Check(_mpi.CommSplit(_comm, member ? 0 : MpiApi.Undefined, Rank, &comm), "MPI_Comm_split");
        }
        if (!member || comm == _mpi.CommNull)
        {
            return null;
        }
        int rank = 0, size = 0;
        _mpi.Check(_mpi.CommRank(comm, &rank), "MPI_Comm_rank");
        _mpi.Check(_mpi.CommSize(comm, &size), "MPI_Comm_size");
        return new MpiProcessGroup(_mpi, comm, rank, size, ownsInitialization: false, Options, _callLock);
    }

    /// <summary>
    /// A sub-group frees its communicator (unless MPI was already finalised); the world finalises MPI when it
    /// initialised it. The library stays loaded (MPI cannot start again).
    /// </summary>
    public void Dispose()
    {
        lock (_callLock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _watchdog.Dispose();
            if (_isSubGroup)
            {
                int finalized = 0;
                _mpi.Check(_mpi.Finalized(&finalized), "MPI_Finalized");
                if (finalized == 0)
                {
                    IntPtr comm = _comm;
                    _mpi.Check(_mpi.CommFree(&comm), "MPI_Comm_free");
                }
            }
            else if (_ownsInitialization)
            {
                _mpi.Check(_mpi.Finalize(), "MPI_Finalize");
            }
        }
    }

    /// <summary>An input and an output tensor of one dtype, both usable here: the input's moving datatype.</summary>
    private IntPtr CheckPair(torch.Tensor input, torch.Tensor output)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        IntPtr datatype = CheckTensor(input, nameof(input));
        _ = CheckTensor(output, nameof(output));
        CollectiveArguments.SameDtype(input, output);
        return datatype;
    }

    private IntPtr CheckTensor(torch.Tensor tensor, string name)
    {
        ThrowIfDisposed();
        if (tensor.device_type == DeviceType.CUDA)
        {
            throw new NotSupportedException(
                $"The mpi backend runs collectives on CPU tensors only; {name} is on {tensor.device}. " +
                "Use the nccl backend for CUDA tensors (ProcessGroups.Initialize(\"nccl\")), or move the tensor to the CPU (.cpu()).");
        }
        if (tensor.device_type != DeviceType.CPU)
        {
            throw new ArgumentException(
                $"The mpi backend runs collectives on CPU tensors only; {name} is on {tensor.device}. Move it to the CPU (.cpu()) first.",
                name);
        }
        if (!tensor.is_contiguous())
        {
            throw new ArgumentException($"{name} is not contiguous; call .contiguous() and copy the result back.", name);
        }
        return _mpi.MovingDatatype(tensor.dtype);
    }

    private static int Count(torch.Tensor tensor)
    {
        long count = tensor.numel();
        return count <= int.MaxValue
            ? (int)count
            : throw new NotSupportedException($"A tensor of {count} elements is over MPI's int count limit ({int.MaxValue}).");
    }

    private void CheckRank(int rank, string name) => CollectiveArguments.Rank(rank, WorldSize, name);

    /// <summary>Holds the call lock and tells the watchdog which collective runs, until disposed.</summary>
    private CallScope Call(string operation, long count, torch.ScalarType dtype, int peer = -1)
    {
        Lock.Scope held = _callLock.EnterScope();
        _watchdog.Begin(operation, count, dtype, peer);
        return new CallScope(held, _watchdog);
    }

    private ref struct CallScope
    {
        private Lock.Scope _held;
        private readonly CollectiveWatchdog _watchdog;

        public CallScope(Lock.Scope held, CollectiveWatchdog watchdog)
        {
            _held = held;
            _watchdog = watchdog;
        }

        public void Dispose()
        {
            _watchdog.End();
            _held.Dispose();
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
