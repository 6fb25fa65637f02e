using TorchSharp;
using TorchSharp.Modules;

namespace Kiln.Distributed;

/// <summary>
/// AdamW (decoupled weight decay, as <c>torch.optim.AdamW</c>) over flat buffers: the parameters of each dtype and device
/// are moved into one contiguous tensor (each parameter becomes a view of it, and so does its gradient), so that one
/// step is a dozen kernels for the whole model instead of a dozen per parameter, which is what TorchSharp's AdamW does.
/// </summary>
/// <remarks>
/// Gradients accumulate into the flat buffer in place, so <see cref="ZeroGrad"/> zeroes it rather than dropping the
/// gradients; code that assigns <c>.grad</c> itself or replaces a parameter's data after construction breaks the views.
/// Tensor work only; not thread-safe.
/// </remarks>
public sealed class FusedAdamW : IDisposable
{
    private readonly Group[] _groups;
    private readonly double _beta1;
    private readonly double _beta2;
    private readonly double _eps;
    private readonly double _weightDecay;
    private long _step;

    /// <summary>Flattens <paramref name="parameters"/> (those that require a gradient) and sets up the optimizer state.</summary>
    /// <param name="parameters">The model's parameters; their values are kept.</param>
    /// <param name="lr">Learning rate.</param>
    /// <param name="beta1">Decay of the first moment.</param>
    /// <param name="beta2">Decay of the second moment.</param>
    /// <param name="eps">Added to the denominator.</param>
    /// <param name="weightDecay">Decoupled weight decay (multiplies the parameters by 1 − lr × weightDecay each step).</param>
    public FusedAdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentOutOfRangeException.ThrowIfNegative(lr);
        if (beta1 is < 0 or >= 1 || beta2 is < 0 or >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(beta1), $"betas must be in [0, 1), got {beta1} and {beta2}");
        }
        LearningRate = lr;
        _beta1 = beta1;
        _beta2 = beta2;
        _eps = eps;
        _weightDecay = weightDecay;
        using var noGrad = torch.no_grad();
        _groups = [.. parameters.Where(p => p.requires_grad).GroupBy(p => (p.dtype, p.device.type, p.device.index)).Select(g => new Group([.. g]))];
    }

    /// <summary>The learning rate of the next <see cref="Step"/>.</summary>
    public double LearningRate { get; set; }

    /// <summary>How many flat buffers (one per dtype and device) the parameters live in.</summary>
    public int BufferCount => _groups.Length;

    /// <summary>Zeroes every gradient in place (one kernel per buffer).</summary>
    public void ZeroGrad()
    {
        foreach (Group group in _groups)
        {
            group.Gradients.zero_();
        }
    }

    /// <summary>One AdamW update of every parameter from its gradient.</summary>
    public void Step()
    {
        _step++;
        double correction1 = 1 - Math.Pow(_beta1, _step);
        double correction2Sqrt = Math.Sqrt(1 - Math.Pow(_beta2, _step));
        double lr = LearningRate;
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        foreach (Group group in _groups)
        {
            if (_weightDecay != 0)
            {
                group.Parameters.mul_(1 - (lr * _weightDecay));
            }
            group.FirstMoment.lerp_(group.Gradients, 1 - _beta1);
            group.SecondMoment.mul_(_beta2).addcmul_(group.Gradients, group.Gradients, 1 - _beta2);
            torch.Tensor denominator = group.SecondMoment.sqrt().div_(correction2Sqrt).add_(_eps);
            group.Parameters.addcdiv_(group.FirstMoment, denominator, -lr / correction1);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (Group group in _groups)
        {
            group.Dispose();
        }
    }

    /// <summary>The parameters of one dtype and device, their gradients and the two moments, each one flat tensor.</summary>
    private sealed class Group : IDisposable
    {
        public Group(Parameter[] members)
        {
            Parameter first = members[0];
            long total = members.Sum(p => p.numel());
            Parameters = torch.empty(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            Gradients = torch.zeros(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            FirstMoment = torch.zeros(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            SecondMoment = torch.zeros(total, dtype: first.dtype, device: first.device).DetachFromDisposeScope();
            long offset = 0;
            foreach (Parameter p in members)
            {
                long n = p.numel();
                long[] shape = p.shape;
                using (torch.Tensor values = Parameters.narrow(0, offset, n))
                {
                    values.copy_(p.reshape(-1));
                }
                using (torch.Tensor view = Parameters.narrow(0, offset, n).view(shape))
                {
                    p.set_(view);
                }
                if (p.grad is { } existing)
                {
                    using (existing)
                    using (torch.Tensor gradientValues = Gradients.narrow(0, offset, n))
                    {
                        gradientValues.copy_(existing.reshape(-1));
                    }
                }
                p.grad = Gradients.narrow(0, offset, n).view(shape).DetachFromDisposeScope();
                offset += n;
            }
        }

        public torch.Tensor Parameters { get; }
        public torch.Tensor Gradients { get; }
        public torch.Tensor FirstMoment { get; }
        public torch.Tensor SecondMoment { get; }

        public void Dispose()
        {
            Parameters.Dispose();
            Gradients.Dispose();
            FirstMoment.Dispose();
            SecondMoment.Dispose();
        }
    }
}
