using TorchSharp;

namespace Kiln.Distributed;

/// <summary>Deterministic mode: micro-batch gradients summed exactly in 64-bit fixed point.</summary>
public sealed partial class DistributedDataParallel
{
    /// <summary>Headroom bits left free in an int64 sum: values are scaled below 2^(62 − ⌈log2 count⌉).</summary>
    private const int FixedPointBits = 62;

    /// <summary>Bounds on the scale exponent, so that 2^k and 2^−k are normal doubles.</summary>
    private const int MaxScaleExponent = 1000;

    /// <summary>This rank's micro-batch gradients since the last synchronisation, one entry per parameter (null: none).</summary>
    private readonly List<torch.Tensor?[]> _microBatches = [];

    /// <summary>How many micro-batches this rank holds for the next <see cref="SynchronizeGradients"/> (deterministic mode).</summary>
    public int PendingMicroBatches => _microBatches.Count;

    /// <summary>
    /// Deterministic mode only: moves the gradients of the micro-batch whose backward just ran out of the parameters'
    /// <c>.grad</c> into this rank's store (the parameters are left without gradients, ready for the next micro-batch).
    /// Call it after every micro-batch's backward, including the last, then <see cref="SynchronizeGradients"/> once.
    /// Every micro-batch of the global batch must have the same size and the loss must be the mean over the micro-batch;
    /// the result is the mean over all micro-batches of all ranks, bit-identical for any number of ranks.
    /// </summary>
    /// <exception cref="InvalidOperationException">The wrapper is not in deterministic mode.</exception>
    public void AccumulateMicroBatch()
    {
        if (!Options.Deterministic)
        {
            throw new InvalidOperationException("AccumulateMicroBatch is for deterministic mode (DistributedDataParallelOptions.Deterministic); otherwise gradients accumulate in .grad under NoSync().");
        }
        var grads = new torch.Tensor?[_parameters.Length];
        for (int i = 0; i < _parameters.Length; i++)
        {
            torch.Tensor p = _parameters[i].Parameter;
            torch.Tensor? grad = p.grad;
            if (grad is not null)
            {
                grads[i] = grad.DetachFromDisposeScope();
                p.grad = null;
            }
        }
        _microBatches.Add(grads);
    }

    private void SynchronizeDeterministic()
    {
        try
        {
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            int n = _parameters.Length;
            // Per parameter, the largest magnitude over this rank's micro-batches; −1 where none has a gradient, +∞
            // where one is not finite (MPI's max need not order NaN). Computed where the gradients are: one transfer.
            var maxes = new torch.Tensor[n];
            for (int i = 0; i < n; i++)
            {
                maxes[i] = torch.full(1, -1.0, dtype: torch.ScalarType.Float64, device: CollectiveDevice);
                foreach (torch.Tensor?[] grads in _microBatches)
                {
                    if (grads[i] is torch.Tensor g && g.numel() > 0)
                    {
                        maxes[i] = torch.maximum(maxes[i], g.abs().max().to(torch.ScalarType.Float64, CollectiveDevice).reshape(1));
                    }
                    else if (grads[i] is not null)
                    {
                        maxes[i] = maxes[i].clamp_min(0.0);
                    }
                }
            }
            torch.Tensor maxTensor = torch.cat(maxes, 0);
            maxTensor = maxTensor.masked_fill(maxTensor.isfinite().logical_not(), double.PositiveInfinity).contiguous();
            Group.AllReduce(maxTensor, ReduceOp.Max);
            double[] globalMax = maxTensor.cpu().data<double>().ToArray();
            torch.Tensor countTensor = torch.tensor(new long[] { _microBatches.Count }).to(CollectiveDevice);
            Group.AllReduce(countTensor, ReduceOp.Sum);
            long count = countTensor.cpu().item<long>();
            if (count == 0)
            {
                throw new InvalidOperationException("SynchronizeGradients in deterministic mode found no micro-batch on any rank: call AccumulateMicroBatch() after each micro-batch's backward.");
            }

            var bucket = new List<int>();
            long bucketBytes = 0;
            for (int i = n - 1; i >= 0; i--)
            {
                if (globalMax[i] < 0)
                {
                    continue;
                }
                if (!double.IsFinite(globalMax[i]))
                {
                    torch.Tensor p = _parameters[i].Parameter;
                    p.grad = torch.full_like(p, double.NaN);
                    continue;
                }
                long bytes = _parameters[i].Parameter.numel() * sizeof(long);
                if (bucket.Count > 0 && bucketBytes + bytes > BucketCapBytes)
                {
                    ReduceFixedPointBucket(bucket, globalMax, count);
                    bucket.Clear();
                    bucketBytes = 0;
                }
                bucket.Add(i);
                bucketBytes += bytes;
            }
            if (bucket.Count > 0)
            {
                ReduceFixedPointBucket(bucket, globalMax, count);
            }
        }
        finally
        {
            foreach (torch.Tensor?[] grads in _microBatches)
            {
                foreach (torch.Tensor? g in grads)
                {
                    g?.Dispose();
                }
            }
            _microBatches.Clear();
        }
    }

    /// <summary>
    /// The exponent k of the scale 2^k for a parameter whose gradients are at most <paramref name="maxAbs"/> in
    /// magnitude over <paramref name="count"/> micro-batches: every |g·2^k| stays below 2^(62 − ⌈log2 count⌉), so the
    /// sum of <paramref name="count"/> of them stays below 2^62.
    /// </summary>
    internal static int FixedPointExponent(double maxAbs, long count)
    {
        if (maxAbs == 0)
        {
            return 0;
        }
        int exponent = Math.ILogB(maxAbs) + 1; // maxAbs < 2^exponent
        int countBits = 64 - (int)ulong.LeadingZeroCount((ulong)(count - 1)); // 2^countBits ≥ count
        return Math.Clamp(FixedPointBits - countBits - exponent, -MaxScaleExponent, MaxScaleExponent);
    }

    private void ReduceFixedPointBucket(List<int> indices, double[] globalMax, long count)
    {
        using var scope = torch.NewDisposeScope();
        var exponents = new int[indices.Count];
        var pieces = new torch.Tensor[indices.Count];
        for (int k = 0; k < indices.Count; k++)
        {
            int i = indices[k];
            exponents[k] = FixedPointExponent(globalMax[i], count);
            double scale = Math.ScaleB(1.0, exponents[k]);
            torch.Tensor p = _parameters[i].Parameter;
            torch.Tensor sum = torch.zeros(p.numel(), dtype: torch.ScalarType.Int64, device: p.device);
            foreach (torch.Tensor?[] grads in _microBatches)
            {
                if (grads[i] is torch.Tensor g)
                {
                    // g·2^k is exact in float64; round half to even, then the int64 sum is exact.
                    sum.add_(g.to_type(torch.ScalarType.Float64).reshape(-1).mul(scale).round().to_type(torch.ScalarType.Int64));
                }
            }
            pieces[k] = sum;
        }
        torch.Tensor flat = pieces.Length == 1 ? pieces[0] : torch.cat(pieces, 0);
        Group.AllReduce(flat, ReduceOp.Sum);
        long offset = 0;
        for (int k = 0; k < indices.Count; k++)
        {
            torch.Tensor p = _parameters[indices[k]].Parameter;
            long numel = p.numel();
            torch.Tensor mean = flat.narrow(0, offset, numel).to_type(torch.ScalarType.Float64)
                .mul(Math.ScaleB(1.0, -exponents[k])).div((double)count);
            p.grad = mean.to_type(p.dtype).view_as(p).contiguous();
            offset += numel;
        }
    }
}
