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
/// This first version does not overlap communication with backward: <see cref="SynchronizeGradients"/> runs after
/// <c>backward()</c> has finished, one blocking all-reduce per bucket. Gradients are grouped into buckets of at most
/// <see cref="BucketCapBytes"/> bytes in reverse registration order (roughly the order backward produces them), each
/// bucket flattened into one contiguous tensor, summed over ranks, divided by the world size and copied back. For a
/// given world size the result is deterministic. Per-rank losses must be means over the rank's shard (equal shard
/// sizes) for the averaged gradients to equal those of the mean loss over the global batch.
/// </remarks>
public sealed partial class DistributedDataParallel
{
    /// <summary>The default bucket size, 25 MB.</summary>
    public const long DefaultBucketCapBytes = 25L * 1024 * 1024;

    private readonly (string Name, torch.Tensor Parameter)[] _parameters;
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
    public bool IsSyncSuspended => _noSyncDepth > 0;

    /// <summary>
    /// Opens a scope during which <see cref="SynchronizeGradients"/> does nothing, so that gradients of several
    /// micro-batches accumulate locally; call <see cref="SynchronizeGradients"/> after the last micro-batch, outside
    /// the scope. Every rank must use the same scopes.
    /// </summary>
    /// <returns>The scope; dispose it to end it.</returns>
    public IDisposable NoSync()
    {
        _noSyncDepth++;
        return new NoSyncScope(this);
    }

    /// <summary>
    /// Averages the gradients over ranks, in place; call it after <c>backward()</c> and before the optimizer step, on
    /// every rank. Parameters that have no gradient on any rank are skipped (their gradient stays absent); a parameter
    /// whose gradient exists on some ranks only counts as zero on the others, which then get the averaged gradient too.
    /// Does nothing inside a <see cref="NoSync"/> scope. Not overlapped with backward in this version.
    /// </summary>
    public void SynchronizeGradients()
    {
        if (_noSyncDepth > 0 || _parameters.Length == 0)
        {
            return;
        }
        if (Options.Deterministic)
        {
            SynchronizeDeterministic();
            return;
        }
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        // Which parameters have a gradient on at least one rank: one small all-reduce so that every rank skips the same ones.
        var present = new int[_parameters.Length];
        for (int i = 0; i < _parameters.Length; i++)
        {
            torch.Tensor p = _parameters[i].Parameter;
            present[i] = p.requires_grad && p.grad is not null ? 1 : 0;
        }
        torch.Tensor mask = torch.tensor(present, dtype: torch.ScalarType.Int32);
        Group.AllReduce(mask, ReduceOp.Max);
        int[] anywhere = mask.data<int>().ToArray();

        var bucket = new List<int>();
        long bucketBytes = 0;
        torch.ScalarType? bucketType = null;
        for (int i = _parameters.Length - 1; i >= 0; i--)
        {
            if (anywhere[i] == 0)
            {
                continue;
            }
            torch.Tensor p = _parameters[i].Parameter;
            long bytes = p.numel() * p.element_size();
            if (bucket.Count > 0 && (bucketType != p.dtype || bucketBytes + bytes > BucketCapBytes))
            {
                ReduceBucket(bucket);
                bucket.Clear();
                bucketBytes = 0;
            }
            bucket.Add(i);
            bucketBytes += bytes;
            bucketType = p.dtype;
        }
        if (bucket.Count > 0)
        {
            ReduceBucket(bucket);
        }
    }

    private void ReduceBucket(List<int> indices)
    {
        using var scope = torch.NewDisposeScope();
        var pieces = new torch.Tensor[indices.Count];
        for (int k = 0; k < indices.Count; k++)
        {
            torch.Tensor p = _parameters[indices[k]].Parameter;
            torch.Tensor? grad = p.grad;
            pieces[k] = grad is null ? torch.zeros(p.numel(), dtype: p.dtype, device: p.device) : grad.reshape(-1);
        }
        torch.Tensor flat = torch.cat(pieces, 0).contiguous();
        Group.AllReduce(flat, ReduceOp.Sum);
        flat.div_(Group.WorldSize);
        long offset = 0;
        foreach (int i in indices)
        {
            torch.Tensor p = _parameters[i].Parameter;
            long n = p.numel();
            torch.Tensor? grad = p.grad;
            if (grad is null)
            {
                p.grad = flat.narrow(0, offset, n).view_as(p).clone();
            }
            else
            {
                grad.copy_(flat.narrow(0, offset, n).view_as(grad));
            }
            offset += n;
        }
    }

    private void VerifySignatures()
    {
        using var scope = torch.NewDisposeScope();
        int size = Group.WorldSize;
        torch.Tensor count = torch.tensor(new long[] { _parameters.Length });
        torch.Tensor counts = torch.zeros(size, dtype: torch.ScalarType.Int64);
        Group.AllGather(count, counts);
        long[] allCounts = counts.data<long>().ToArray();
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
        torch.Tensor mine = torch.tensor(hashes);
        torch.Tensor all = torch.zeros(size * max, dtype: torch.ScalarType.Int64);
        Group.AllGather(mine, all);
        long[] gathered = all.data<long>().ToArray();
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
                owner._noSyncDepth--;
            }
        }
    }
}
