using System.Globalization;
using System.Text;
using TorchSharp;

namespace Kiln.Distributed;

/// <summary>
/// Data-parallel training of a TorchSharp module over a process group: every rank holds a full replica, runs forward and
/// backward on its own shard of the batch, then calls <see cref="SynchronizeGradients"/> so that every rank holds the
/// gradients averaged over ranks before the optimizer step.
/// </summary>
/// <remarks>
/// Gradients are grouped at construction into buckets of at most <see cref="BucketCapBytes"/> bytes in reverse
/// registration order (roughly the order backward produces them). With <see cref="DistributedDataParallelOptions.OverlapWithBackward"/>
/// (the default) a bucket's all-reduce is launched during backward as soon as the leaf modules owning its parameters
/// have finished their backward and every lower-numbered bucket has been launched; <see cref="SynchronizeGradients"/>
/// launches whatever is left, in bucket order, waits for all, divides by the world size and writes the averages into
/// the gradients. For a given world size the result is deterministic; <see cref="DistributedDataParallelOptions.Deterministic"/>
/// makes it the same for every world size. Per-rank losses must be means over the rank's shard (equal shard sizes) for
/// the averaged gradients to equal those of the mean loss over the global batch.
/// </remarks>
public sealed partial class DistributedDataParallel
{
    /// <summary>The default bucket size, 25 MB.</summary>
    public const long DefaultBucketCapBytes = 25L * 1024 * 1024;

    private readonly (string Name, torch.Tensor Parameter)[] _parameters;
    private readonly Bucket[] _buckets;

    /// <summary>Guards the per-iteration state, which backward callbacks (on autograd's threads) also touch.</summary>
    private readonly Lock _stateLock = new();
    private int _noSyncDepth;

    /// <summary>
    /// Wraps <paramref name="module"/>: checks that every rank has the same parameter names, shapes and dtypes, then
    /// copies rank 0's parameters and buffers into every other rank's, in place. Every rank must call it together.
    /// </summary>
    /// <param name="module">The replica on this rank.</param>
    /// <param name="group">The ranks that train together.</param>
    /// <param name="bucketCapBytes">The largest bucket of gradients one all-reduce carries (a gradient larger than that is a bucket of its own).</param>
    /// <exception cref="DistributedException">The ranks' parameters differ; the message names the first differing parameter.</exception>
    public DistributedDataParallel(torch.nn.Module module, IProcessGroup group, long bucketCapBytes = DefaultBucketCapBytes)
        : this(module, group, new DistributedDataParallelOptions { BucketCapBytes = bucketCapBytes })
    {
    }

    /// <summary>
    /// Wraps <paramref name="module"/> with the given settings: checks that every rank has the same parameter names,
    /// shapes and dtypes, then copies rank 0's parameters and buffers into every other rank's, in place. Every rank
    /// must call it together, with the same settings.
    /// </summary>
    /// <param name="module">The replica on this rank.</param>
    /// <param name="group">The ranks that train together.</param>
    /// <param name="options">Bucket size, deterministic mode, overlap with backward.</param>
    /// <exception cref="DistributedException">The ranks' parameters differ; the message names the first differing parameter.</exception>
    public DistributedDataParallel(torch.nn.Module module, IProcessGroup group, DistributedDataParallelOptions options)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(group);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BucketCapBytes, 1);
        Module = module;
        Group = group;
        Options = options;
        BucketCapBytes = options.BucketCapBytes;
        _parameters = [.. module.named_parameters().Select(p => (p.name, p.parameter as torch.Tensor))];
        VerifySignatures();
        BroadcastState();
        _buckets = BuildBuckets();
        if (!options.Deterministic && options.OverlapWithBackward)
        {
            RegisterHooks();
        }
    }

    /// <summary>The wrapped module.</summary>
    public torch.nn.Module Module { get; }

    /// <summary>The process group.</summary>
    public IProcessGroup Group { get; }

    /// <summary>The largest bucket one all-reduce carries, in bytes.</summary>
    public long BucketCapBytes { get; }

    /// <summary>The settings this wrapper was built with.</summary>
    public DistributedDataParallelOptions Options { get; }

    /// <summary>Whether a <see cref="NoSync"/> scope is open.</summary>
    public bool IsSyncSuspended
    {
        get
        {
            lock (_stateLock)
            {
                return _noSyncDepth > 0;
            }
        }
    }

    /// <summary>
    /// Opens a scope during which <see cref="SynchronizeGradients"/> does nothing and backward launches no all-reduce,
    /// so that gradients of several micro-batches accumulate locally; call <see cref="SynchronizeGradients"/> after the
    /// last micro-batch, outside the scope. Every rank must use the same scopes.
    /// </summary>
    /// <returns>The scope; dispose it to end it.</returns>
    public IDisposable NoSync()
    {
        lock (_stateLock)
        {
            _noSyncDepth++;
        }
        return new NoSyncScope(this);
    }

    /// <summary>
    /// Averages the gradients over ranks, in place; call it after <c>backward()</c> and before the optimizer step, on
    /// every rank. Buckets not launched during backward are launched here, in bucket order; then every bucket is waited
    /// for and its average written into the gradients. Parameters that have no gradient on any rank are skipped (their
    /// gradient stays absent); a parameter whose gradient exists on some ranks only counts as zero on the others, which
    /// then get the averaged gradient too. Does nothing inside a <see cref="NoSync"/> scope. In deterministic mode it
    /// reduces the micro-batches stored by <see cref="AccumulateMicroBatch"/> instead.
    /// </summary>
    /// <exception cref="DistributedException">A launch during backward failed, or a parameter received gradient after its bucket was launched (it is used outside the module that owns it; turn <see cref="DistributedDataParallelOptions.OverlapWithBackward"/> off).</exception>
    public void SynchronizeGradients()
    {
        if (IsSyncSuspended || _parameters.Length == 0)
        {
            return;
        }
        if (Options.Deterministic)
        {
            SynchronizeDeterministic();
            return;
        }
        lock (_stateLock)
        {
            try
            {
                if (_backwardError is not null)
                {
                    throw new DistributedException("DistributedDataParallel: launching a gradient bucket during backward failed", _backwardError);
                }
                while (_nextBucket < _buckets.Length)
                {
                    LaunchBucket(_nextBucket++);
                }
                FinishBuckets();
            }
            finally
            {
                ResetIteration();
            }
        }
    }

    /// <summary>Where the group's own small tensors live: the parameters' device (NCCL takes CUDA tensors only).</summary>
    private torch.Device CollectiveDevice => _parameters.Length > 0 ? _parameters[0].Parameter.device : torch.CPU;

    private void VerifySignatures()
    {
        using var scope = torch.NewDisposeScope();
        int size = Group.WorldSize;
        torch.Tensor count = torch.tensor(new long[] { _parameters.Length }).to(CollectiveDevice);
        torch.Tensor counts = torch.zeros(size, dtype: torch.ScalarType.Int64, device: CollectiveDevice);
        Group.AllGather(count, counts);
        long[] allCounts = counts.cpu().data<long>().ToArray();
        long max = allCounts.Max();
        // Every rank's hashes, padded to the longest list with 0 (no real hash is 0).
        var hashes = new long[max];
        for (int i = 0; i < _parameters.Length; i++)
        {
            hashes[i] = Hash(Describe(i));
        }
        if (max == 0)
        {
            return;
        }
        torch.Tensor mine = torch.tensor(hashes).to(CollectiveDevice);
        torch.Tensor all = torch.zeros(size * max, dtype: torch.ScalarType.Int64, device: CollectiveDevice);
        Group.AllGather(mine, all);
        long[] gathered = all.cpu().data<long>().ToArray();
        for (long i = 0; i < max; i++)
        {
            var differing = new List<int>();
            for (int r = 1; r < size; r++)
            {
                if (gathered[(r * max) + i] != gathered[i])
                {
                    differing.Add(r);
                }
            }
            if (differing.Count > 0)
            {
                string here = i < _parameters.Length ? Describe((int)i) : "none (fewer parameters)";
                throw new DistributedException(string.Create(CultureInfo.InvariantCulture,
                    $"DistributedDataParallel: the ranks' parameters differ, first at parameter #{i}: on rank {Group.Rank} it is {here}; rank(s) {string.Join(",", differing)} differ from rank 0 (parameter counts per rank: {string.Join(",", allCounts)})."));
            }
        }
    }

    private void BroadcastState()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        IEnumerable<torch.Tensor> state = _parameters.Select(p => p.Parameter).Concat(Module.named_buffers().Select(b => b.buffer));
        foreach (torch.Tensor t in state)
        {
            if (t.is_contiguous())
            {
                Group.Broadcast(t, 0);
            }
            else
            {
                torch.Tensor copy = t.contiguous();
                Group.Broadcast(copy, 0);
                t.copy_(copy);
            }
        }
    }

    private string Describe(int i)
    {
        torch.Tensor p = _parameters[i].Parameter;
        return string.Create(CultureInfo.InvariantCulture, $"'{_parameters[i].Name}' {Shape(p)} {p.dtype}");
    }

    private static string Shape(torch.Tensor t) => "[" + string.Join(",", t.shape) + "]";

    /// <summary>FNV-1a over the UTF-8 text, never 0.</summary>
    private static long Hash(string text)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            h = (h ^ b) * 1099511628211UL;
        }
        return h == 0 ? 1 : unchecked((long)h);
    }

    private sealed class NoSyncScope(DistributedDataParallel owner) : IDisposable
    {
        private bool _disposed;

        public void Dispose()
        {
            if (!_disposed)
            {
                _disposed = true;
                owner.EndNoSync();
            }
        }
    }
}
