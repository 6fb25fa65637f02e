using System.Globalization;
using System.Runtime.InteropServices;
using Kiln.Distributed.Mpi;
using Kiln.Runtime;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Kiln.Distributed.Nccl;

/// <summary>
/// An NCCL communicator of WORLD_SIZE ranks, one CUDA device per rank, as an <see cref="IProcessGroup"/>. Collectives
/// run in place on the device memory of contiguous CUDA tensors and are queued on CUDA's legacy default stream — the
/// stream libtorch's own kernels use — so they are ordered with the surrounding tensor work without a host wait;
/// reading a result on the host (e.g. <c>.cpu()</c>) waits for it. <see cref="Barrier"/> waits on the host.
/// The asynchronous collectives (<see cref="AllReduceAsync"/> for DDP's gradient buckets, and the others) run on a
/// second, non-blocking stream instead, ordered by CUDA events, so that the reduction overlaps the backward kernels
/// still running on the default stream. A watchdog
/// (<see cref="NcclWatchdog"/>) ends the job when a queued collective does not complete within
/// <see cref="ProcessGroupOptions.Timeout"/>.
/// </summary>
internal sealed unsafe partial class NcclProcessGroup : IProcessGroup
{
    private const uint StreamNonBlocking = 0x1;
    private const uint EventDisableTiming = 0x2;

    private static readonly Lock CreateLock = new();
    private static bool s_created;

    private readonly NcclApi _nccl;
    private readonly NcclCommHandle _comm;
    private readonly Lock _callLock = new();
    private readonly IntPtr _stream = IntPtr.Zero;
    private readonly NcclWatchdog _watchdog;
    private IntPtr _sideStream;

    /// <summary>The asynchronous works not yet seen complete, whose CUDA events are still alive.</summary>
    private readonly Queue<SideStreamWork> _works = new();

    /// <summary>Set once the watchdog has begun ending the job; calls failing after that wait for the exit.</summary>
    private volatile bool _aborting;

    private NcclProcessGroup(NcclApi nccl, NcclCommHandle comm, int rank, int worldSize, int device, ProcessGroupOptions options)
    {
        _nccl = nccl;
        _comm = comm;
        Rank = rank;
        WorldSize = worldSize;
        Device = device;
        Options = options;
        _watchdog = new NcclWatchdog(new GpuEvents(this), options.Timeout, rank, worldSize, AbortJob);
    }

    /// <summary>The exit code of a rank the watchdog ends, as the mpi backend's: 124, timeout(1)'s.</summary>
    public const int TimeoutExitCode = MpiProcessGroup.TimeoutAbortCode;

    /// <inheritdoc />
    public string Backend => "nccl";

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int WorldSize { get; }

    /// <summary>The CUDA device index of this rank (LOCAL_RANK by default).</summary>
    public int Device { get; }

    /// <summary>The settings the group was created with.</summary>
    public ProcessGroupOptions Options { get; }

    /// <summary>Joins the communicator described by torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.</summary>
    public static NcclProcessGroup Create(ProcessGroupOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        int worldSize = Variable("WORLD_SIZE", 1);
        int rank = Variable("RANK", 0);
        int localRank = Variable("LOCAL_RANK", rank);
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
        {
            throw new DistributedException($"RANK={rank} and WORLD_SIZE={worldSize} from the launcher's environment do not make a world (0 ≤ RANK < WORLD_SIZE).");
        }
        string? masterAddress = Environment.GetEnvironmentVariable("MASTER_ADDR");
        int masterPort = Variable("MASTER_PORT", 0);
        if (worldSize > 1 && (string.IsNullOrEmpty(masterAddress) || masterPort <= 0))
        {
            throw new DistributedException($"WORLD_SIZE={worldSize} but MASTER_ADDR/MASTER_PORT are not set; start the ranks with kiln agent, kiln run … dist.ddp or torchrun, or set them by hand.");
        }
        lock (CreateLock)
        {
            if (s_created)
            {
                throw new DistributedException("An NCCL process group was already created in this process.");
            }
            var runtime = TorchRuntimeOptions.FromEnvironment();
            LibTorchInfo torchInfo = TorchRuntime.EnsureInitialized(runtime);
            if (!torch.cuda.is_available() || torch.cuda.device_count() == 0)
            {
                throw new DistributedException($"the nccl backend needs CUDA, and libtorch sees no CUDA device ({torchInfo.CudaProblem ?? "CPU-only libtorch"}); use the mpi backend for CPU tensors.");
            }
            int devices = torch.cuda.device_count();
            if (localRank >= devices)
            {
                throw new DistributedException($"LOCAL_RANK={localRank} but this host has {devices} CUDA device(s); start at most one rank per GPU.");
            }
            NcclApi nccl = NcclApi.Open(runtime.NcclDirectory);
            nccl.CheckCuda(nccl.SetDevice(localRank), $"cudaSetDevice({localRank})");
            var id = new NcclUniqueId();
            var idBytes = new byte[NcclApi.UniqueIdBytes];
            if (rank == 0)
            {
                nccl.Check(nccl.GetUniqueId(&id), "ncclGetUniqueId", IntPtr.Zero);
                new ReadOnlySpan<byte>(id.Internal, NcclApi.UniqueIdBytes).CopyTo(idBytes);
                if (worldSize > 1)
                {
                    NcclIdExchange.Serve(idBytes, masterPort, worldSize, options.Timeout);
                }
            }
            else
            {
                idBytes = NcclIdExchange.Fetch(masterAddress!, masterPort, rank, worldSize, options.Timeout);
                idBytes.CopyTo(new Span<byte>(id.Internal, NcclApi.UniqueIdBytes));
            }
            IntPtr comm = IntPtr.Zero;
            nccl.Check(nccl.CommInitRank(&comm, worldSize, id, rank), $"ncclCommInitRank(rank {rank} of {worldSize})", IntPtr.Zero);
            s_created = true;
            return new NcclProcessGroup(nccl, new NcclCommHandle(nccl, comm), rank, worldSize, localRank, options);
        }
    }

    /// <inheritdoc />
    public void AllReduce(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        Func<IntPtr, int> call = AllReduceCall(tensor, op);
        Call(() => call(_stream), "ncclAllReduce", "all_reduce", tensor);
    }

    /// <inheritdoc />
    public void Broadcast(torch.Tensor tensor, int root)
    {
        Func<IntPtr, int> call = BroadcastCall(tensor, root);
        Call(() => call(_stream), "ncclBroadcast", "broadcast", tensor);
    }

    /// <inheritdoc />
    public void AllGather(torch.Tensor input, torch.Tensor output)
    {
        Func<IntPtr, int> call = AllGatherCall(input, output);
        Call(() => call(_stream), "ncclAllGather", "all_gather", input);
    }

    /// <inheritdoc />
    public void ReduceScatter(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        Func<IntPtr, int> call = ReduceScatterCall(input, output, op);
        Call(() => call(_stream), "ncclReduceScatter", "reduce_scatter", output);
    }

    // Each collective's argument checks, then the NCCL call on a given stream: the default stream for the blocking
    // forms, the side stream for the asynchronous ones.

    private Func<IntPtr, int> AllReduceCall(torch.Tensor tensor, ReduceOp op)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        int datatype = CheckTensor(tensor, nameof(tensor));
        if (op == ReduceOp.Average && !tensor.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {tensor.dtype}.");
        }
        IntPtr data = DataPointer(tensor);
        return stream => _nccl.AllReduce(data, data, (nuint)tensor.numel(), datatype, NcclApi.Op(op), _comm.Value, stream);
    }

    private Func<IntPtr, int> BroadcastCall(torch.Tensor tensor, int root)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(root, nameof(root));
        int datatype = CheckTensor(tensor, nameof(tensor));
        IntPtr data = DataPointer(tensor);
        return stream => _nccl.Broadcast(data, data, (nuint)tensor.numel(), datatype, root, _comm.Value, stream);
    }

    private Func<IntPtr, int> AllGatherCall(torch.Tensor input, torch.Tensor output)
    {
        int datatype = CheckPair(input, output);
        long count = input.numel();
        CollectiveArguments.AllGatherOutput(count, output, WorldSize);
        IntPtr send = DataPointer(input), receive = DataPointer(output);
        return stream => _nccl.AllGather(send, receive, (nuint)count, datatype, _comm.Value, stream);
    }

    private Func<IntPtr, int> ReduceScatterCall(torch.Tensor input, torch.Tensor output, ReduceOp op)
    {
        int datatype = CheckPair(input, output);
        if (op == ReduceOp.Average && !input.is_floating_point())
        {
            throw new NotSupportedException($"ReduceOp.Average needs a floating-point tensor, not {input.dtype}.");
        }
        long block = CollectiveArguments.ReduceScatterBlock(input, output, WorldSize);
        IntPtr send = DataPointer(input), receive = DataPointer(output);
        return stream => _nccl.ReduceScatter(send, receive, (nuint)block, datatype, NcclApi.Op(op), _comm.Value, stream);
    }

    /// <inheritdoc />
    public void AllToAll(torch.Tensor input, torch.Tensor output)
    {
        Func<IntPtr, int> exchange = AllToAllCall(input, output);
        Call(() => exchange(_stream), "ncclSend/ncclRecv", "all_to_all", input);
    }

    /// <inheritdoc />
    public ICollectiveWork AllToAllAsync(torch.Tensor input, torch.Tensor output) =>
        OnSideStream(AllToAllCall(input, output), "ncclSend/ncclRecv", "all_to_all", input);

    /// <summary>
    /// all_to_all's checks, then NCCL's form of it: one send and one receive of a block per peer, grouped
    /// (ncclGroupStart/End) so that they run as one operation on the given stream.
    /// </summary>
    private Func<IntPtr, int> AllToAllCall(torch.Tensor input, torch.Tensor output)
    {
        int datatype = CheckPair(input, output);
        long block = CollectiveArguments.AllToAllBlock(input, output, WorldSize);
        IntPtr send = DataPointer(input), receive = DataPointer(output);
        if (block > 0 && send == receive)
        {
            throw new ArgumentException("all_to_all cannot run in place: give an output tensor other than the input.", nameof(output));
        }
        long stride = block * input.element_size();
        return stream =>
        {
            int result = _nccl.GroupStart();
            for (int peer = 0; peer < WorldSize && result == 0; peer++)
            {
                result = _nccl.Send(send + (nint)(peer * stride), (nuint)block, datatype, peer, _comm.Value, stream);
                if (result == 0)
                {
                    result = _nccl.Recv(receive + (nint)(peer * stride), (nuint)block, datatype, peer, _comm.Value, stream);
                }
            }
            int end = _nccl.GroupEnd();
            return result != 0 ? result : end;
        };
    }

    /// <inheritdoc />
    public void Barrier()
    {
        using torch.Tensor token = torch.ones(1, dtype: torch.ScalarType.Int32, device: new torch.Device(DeviceType.CUDA, Device));
        AllReduce(token);
        lock (_callLock)
        {
            int result = _nccl.StreamSynchronize(_stream);
            if (result != 0)
            {
                WaitForExitIfAborting();
            }
            _nccl.CheckCuda(result, "cudaStreamSynchronize");
        }
    }

    /// <inheritdoc />
    public IProcessGroup? NewGroup(IReadOnlyList<int> ranks)
    {
        int[] members = CollectiveArguments.GroupRanks(ranks, WorldSize);
        ObjectDisposedException.ThrowIf(_comm.IsClosed, this);
        int index = Array.IndexOf(members, Rank);
        IntPtr comm = IntPtr.Zero;
        lock (_callLock)
        {
            _nccl.CheckCuda(_nccl.SetDevice(Device), $"cudaSetDevice({Device})");
            // Blocking on the host like the first collective: the watchdog follows the call itself.
            _watchdog.Begin("new_group", -1, default);
            int result = _nccl.CommSplit(_comm.Value, index >= 0 ? 0 : NcclApi.SplitNoColor, Rank, &comm, IntPtr.Zero);
            _watchdog.Abandon();
            if (result != 0)
            {
                WaitForExitIfAborting();
                _nccl.Check(result, "ncclCommSplit", _comm.Value);
            }
        }
        return index < 0 || comm == IntPtr.Zero ? null : new NcclProcessGroup(_nccl, new NcclCommHandle(_nccl, comm), index, members.Length, Device, Options);
    }

    /// <inheritdoc />
    public void Send(torch.Tensor tensor, int destination, int tag = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(destination, nameof(destination));
        CheckTag(tag);
        int datatype = CheckTensor(tensor, nameof(tensor));
        IntPtr data = DataPointer(tensor);
        Call(() => _nccl.Send(data, (nuint)tensor.numel(), datatype, destination, _comm.Value, _stream), "ncclSend", "send", tensor, destination);
    }

    /// <inheritdoc />
    public void Recv(torch.Tensor tensor, int source, int tag = 0)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        CheckRank(source, nameof(source));
        CheckTag(tag);
        int datatype = CheckTensor(tensor, nameof(tensor));
        IntPtr data = DataPointer(tensor);
        Call(() => _nccl.Recv(data, (nuint)tensor.numel(), datatype, source, _comm.Value, _stream), "ncclRecv", "recv", tensor, source);
    }

    /// <summary>
    /// Starts an in-place all-reduce on the side stream after everything already queued on the default stream, and
    /// returns at once; <see cref="ICollectiveWork.Wait"/> makes later default-stream work wait for it (no host wait).
    /// The tensor must stay alive until then.
    /// </summary>
    public ICollectiveWork AllReduceAsync(torch.Tensor tensor, ReduceOp op = ReduceOp.Sum) =>
        OnSideStream(AllReduceCall(tensor, op), "ncclAllReduce", "all_reduce", tensor);

    /// <inheritdoc />
    public ICollectiveWork BroadcastAsync(torch.Tensor tensor, int root) =>
        OnSideStream(BroadcastCall(tensor, root), "ncclBroadcast", "broadcast", tensor);

    /// <inheritdoc />
    public ICollectiveWork AllGatherAsync(torch.Tensor input, torch.Tensor output) =>
        OnSideStream(AllGatherCall(input, output), "ncclAllGather", "all_gather", input);

    /// <inheritdoc />
    public ICollectiveWork ReduceScatterAsync(torch.Tensor input, torch.Tensor output, ReduceOp op = ReduceOp.Sum) =>
        OnSideStream(ReduceScatterCall(input, output, op), "ncclReduceScatter", "reduce_scatter", output);

    /// <summary>
    /// Queues <paramref name="call"/> (given the side stream) on the side stream after everything already queued on
    /// the default stream, under the watchdog, and returns its work; nothing is queued for an empty tensor.
    /// </summary>
    private SideStreamWork OnSideStream(Func<IntPtr, int> call, string name, string operation, torch.Tensor described)
    {
        ObjectDisposedException.ThrowIf(_comm.IsClosed, this);
        lock (_callLock)
        {
            _nccl.CheckCuda(_nccl.SetDevice(Device), $"cudaSetDevice({Device})");
            if (_sideStream == IntPtr.Zero)
            {
                IntPtr created = IntPtr.Zero;
                _nccl.CheckCuda(_nccl.StreamCreateWithFlags(&created, StreamNonBlocking), "cudaStreamCreateWithFlags");
                _sideStream = created;
            }
            IntPtr ready = RecordEvent(_stream);
            _nccl.CheckCuda(_nccl.StreamWaitEvent(_sideStream, ready, 0), "cudaStreamWaitEvent");
            _nccl.CheckCuda(_nccl.EventDestroy(ready), "cudaEventDestroy");
            if (described.numel() > 0)
            {
                IntPtr side = _sideStream;
                Enqueue(() => call(side), name, operation, described, side);
            }
            SweepWorks();
            var work = new SideStreamWork(this, RecordEvent(_sideStream));
            _works.Enqueue(work);
            return work;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _watchdog.Dispose();
        if (_sideStream != IntPtr.Zero)
        {
            _ = _nccl.StreamSynchronize(_sideStream);
            _ = _nccl.StreamDestroy(_sideStream);
            _sideStream = IntPtr.Zero;
        }
        lock (_callLock)
        {
            if (_works.Count > 0)
            {
                _ = _nccl.SetDevice(Device);
                foreach (SideStreamWork work in _works)
                {
                    work.Release();
                }
                _works.Clear();
            }
        }
        _comm.Dispose();
    }

    private IntPtr RecordEvent(IntPtr stream)
    {
        IntPtr cudaEvent = IntPtr.Zero;
        _nccl.CheckCuda(_nccl.EventCreateWithFlags(&cudaEvent, EventDisableTiming), "cudaEventCreateWithFlags");
        _nccl.CheckCuda(_nccl.EventRecord(cudaEvent, stream), "cudaEventRecord");
        return cudaEvent;
    }

    /// <summary>
    /// An all-reduce queued on the side stream; waiting orders the default stream after it. Its event lives until the
    /// group sees it complete (<see cref="SweepWorks"/>, at each asynchronous call) or is disposed.
    /// </summary>
    private sealed class SideStreamWork(NcclProcessGroup group, IntPtr done) : ICollectiveWork
    {
        private IntPtr _done = done;

        public bool IsCompleted
        {
            get
            {
                lock (group._callLock)
                {
                    group._nccl.CheckCuda(group._nccl.SetDevice(group.Device), $"cudaSetDevice({group.Device})");
                    return Sweep();
                }
            }
        }

        public void Wait()
        {
            lock (group._callLock)
            {
                // Events belong to the group's device: make it current before touching them.
                group._nccl.CheckCuda(group._nccl.SetDevice(group.Device), $"cudaSetDevice({group.Device})");
                if (Sweep())
                {
                    return;
                }
                group._nccl.CheckCuda(group._nccl.StreamWaitEvent(group._stream, _done, 0), "cudaStreamWaitEvent");
            }
        }

        /// <summary>Under the group's lock: true once complete (the event is then destroyed).</summary>
        public bool Sweep()
        {
            if (_done == IntPtr.Zero)
            {
                return true;
            }
            int result = group._nccl.EventQuery(_done);
            if (result == NcclApi.CudaErrorNotReady)
            {
                return false;
            }
            group._nccl.CheckCuda(result, "cudaEventQuery");
            Release();
            return true;
        }

        /// <summary>Under the group's lock: destroys the event (CUDA frees a pending one once it completes).</summary>
        public void Release()
        {
            if (_done != IntPtr.Zero)
            {
                _ = group._nccl.EventDestroy(_done);
                _done = IntPtr.Zero;
            }
        }
    }

    /// <summary>
    /// Under the call lock: forgets the works whose all-reduce has completed, destroying their events. They run one
    /// after another on the side stream, so only the oldest few need asking.
    /// </summary>
    private void SweepWorks()
    {
        while (_works.Count > 0 && _works.Peek().Sweep())
        {
            _ = _works.Dequeue();
        }
    }

    /// <summary>Queues one NCCL call on the default stream for the watchdog to follow; <paramref name="tensor"/> gives its size and dtype.</summary>
    private void Call(Func<int> call, string name, string operation, torch.Tensor tensor, int peer = -1)
    {
        ObjectDisposedException.ThrowIf(_comm.IsClosed, this);
        long count = tensor.numel();
        if (count == 0)
        {
            return;
        }
        lock (_callLock)
        {
            // The calling thread's current device must be the communicator's.
            _nccl.CheckCuda(_nccl.SetDevice(Device), $"cudaSetDevice({Device})");
            Enqueue(call, name, operation, tensor, _stream, peer);
        }
    }

    /// <summary>Under the call lock: makes the NCCL call with the watchdog following it, from the call into <paramref name="stream"/>.</summary>
    private void Enqueue(Func<int> call, string name, string operation, torch.Tensor tensor, IntPtr stream, int peer = -1)
    {
        _watchdog.Begin(operation, tensor.numel(), tensor.dtype, peer);
        int result = call();
        if (result != 0)
        {
            WaitForExitIfAborting();
            _watchdog.Abandon();
            _nccl.Check(result, name, _comm.Value);
        }
        _watchdog.Queued(stream);
    }

    /// <summary>
    /// The watchdog's end of a collective that timed out or failed: one line on stderr (and the logger), then
    /// <c>ncclCommAbort</c>, which stops this rank's spinning kernels, then the process ends with
    /// <see cref="TimeoutExitCode"/> — whatever the training thread was waiting on. A launcher (kiln agent, torchrun)
    /// then stops the other ranks; ranks started by hand each end through their own watchdog.
    /// </summary>
    private void AbortJob(string description)
    {
        _aborting = true;
        Console.Error.WriteLine($"Kiln.Distributed: {description}");
        if (Options.Logger is { } logger)
        {
            LogCollectiveFailed(logger, description);
        }
        // Neither ncclCommAbort nor the runtime's orderly exit may hang this rank: the training thread can be blocked
        // inside NCCL or CUDA. After 10 s each, the process ends without running exit handlers.
        var abort = new Thread(() => _ = _nccl.CommAbort(_comm.Value)) { IsBackground = true, Name = "Kiln.Distributed NCCL abort" };
        abort.Start();
        _ = abort.Join(TimeSpan.FromSeconds(10));
        var deadline = new Thread(() =>
        {
            Thread.Sleep(TimeSpan.FromSeconds(10));
            ExitImmediately(TimeoutExitCode);
        }) { IsBackground = true, Name = "Kiln.Distributed exit deadline" };
        deadline.Start();
        Environment.Exit(TimeoutExitCode);
    }

    /// <summary>
    /// A call that fails because the watchdog aborted the communicator waits for the exit the watchdog has begun, so
    /// that the rank ends with <see cref="TimeoutExitCode"/> and the watchdog's reason, not NCCL's "internal error".
    /// </summary>
    private void WaitForExitIfAborting()
    {
        if (_aborting)
        {
            Thread.Sleep(Timeout.Infinite);
        }
    }

    /// <summary>libc's <c>_exit</c>: ends the process at once, running no exit handlers.</summary>
    [LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void ExitImmediately(int status);

    [LoggerMessage(EventId = 1601, Level = LogLevel.Critical, Message = "{Description}")]
    private static partial void LogCollectiveFailed(ILogger logger, string description);

    /// <summary>The watchdog's view of this group's CUDA events and communicator.</summary>
    private sealed class GpuEvents(NcclProcessGroup group) : NcclWatchdog.IGpuEvents
    {
        private bool _deviceSet;

        public IntPtr CreateEvent()
        {
            IntPtr cudaEvent = IntPtr.Zero;
            group._nccl.CheckCuda(group._nccl.EventCreateWithFlags(&cudaEvent, EventDisableTiming), "cudaEventCreateWithFlags");
            return cudaEvent;
        }

        public void RecordEvent(IntPtr cudaEvent, IntPtr stream) =>
            group._nccl.CheckCuda(group._nccl.EventRecord(cudaEvent, stream), "cudaEventRecord");

        public bool IsComplete(IntPtr cudaEvent)
        {
            if (!_deviceSet)
            {
                // The watchdog's thread queries with the group's device current, as CUDA expects.
                group._nccl.CheckCuda(group._nccl.SetDevice(group.Device), $"cudaSetDevice({group.Device})");
                _deviceSet = true;
            }
            int result = group._nccl.EventQuery(cudaEvent);
            if (result == NcclApi.CudaErrorNotReady)
            {
                return false;
            }
            group._nccl.CheckCuda(result, "cudaEventQuery");
            return true;
        }

        public void DestroyEvent(IntPtr cudaEvent) => _ = group._nccl.EventDestroy(cudaEvent);

        public string? AsyncError()
        {
            if (group._comm.IsClosed)
            {
                return null;
            }
            int error = 0;
            int result = group._nccl.CommGetAsyncError(group._comm.Value, &error);
            if (result != 0 || error == 0 || error == NcclApi.NcclInProgress)
            {
                return null;
            }
            return Marshal.PtrToStringUTF8(group._nccl.GetErrorString(error)) ?? $"ncclResult_t {error}";
        }
    }

    private IntPtr DataPointer(torch.Tensor tensor) => tensor.numel() == 0 ? IntPtr.Zero : _nccl.TensorData(tensor.Handle);

    /// <summary>An input and an output tensor of one dtype, both on this rank's device: the NCCL datatype.</summary>
    private int CheckPair(torch.Tensor input, torch.Tensor output)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        int datatype = CheckTensor(input, nameof(input));
        _ = CheckTensor(output, nameof(output));
        CollectiveArguments.SameDtype(input, output);
        return datatype;
    }

    private int CheckTensor(torch.Tensor tensor, string parameter)
    {
        if (tensor.device_type != DeviceType.CUDA || tensor.device_index != Device)
        {
            throw new ArgumentException(
                $"the nccl backend of rank {Rank} works on cuda:{Device}, but {parameter} is on {tensor.device}: move it with .to(\"cuda:{Device}\"), or use the mpi backend for CPU tensors.",
                parameter);
        }
        if (!tensor.is_contiguous())
        {
            throw new ArgumentException($"{parameter} is not contiguous; collectives work in place on contiguous tensors (call .contiguous() and copy back).", parameter);
        }
        return NcclApi.Datatype(tensor.dtype);
    }

    private void CheckRank(int rank, string parameter) => CollectiveArguments.Rank(rank, WorldSize, parameter);

    private static void CheckTag(int tag)
    {
        if (tag != 0)
        {
            throw new NotSupportedException("the nccl backend has no message tags; send and receive in the same order on both ranks with tag 0.");
        }
    }

    private static int Variable(string name, int fallback)
    {
        string? text = Environment.GetEnvironmentVariable(name);
        if (string.IsNullOrEmpty(text))
        {
            return fallback;
        }
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)
            ? value
            : throw new DistributedException($"{name}={text} is not an integer.");
    }

    /// <summary>An ncclComm_t, destroyed once.</summary>
    private sealed class NcclCommHandle : SafeHandle
    {
        private readonly NcclApi _nccl;

        public NcclCommHandle(NcclApi nccl, IntPtr comm)
            : base(IntPtr.Zero, ownsHandle: true)
        {
            _nccl = nccl;
            SetHandle(comm);
        }

        public IntPtr Value => handle;

        public override bool IsInvalid => handle == IntPtr.Zero;

        protected override bool ReleaseHandle() => _nccl.CommDestroy(handle) == 0;
    }
}
