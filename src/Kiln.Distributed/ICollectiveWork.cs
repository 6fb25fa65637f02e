namespace Kiln.Distributed;

/// <summary>
/// A collective started by one of <see cref="IProcessGroup"/>'s <c>…Async</c> methods, as torch.distributed's
/// <c>Work</c> from <c>async_op=True</c>: its tensors must stay alive and untouched until <see cref="Wait"/> returns.
/// </summary>
public interface ICollectiveWork
{
    /// <summary>Whether the collective has finished (for a device backend: its kernels have run).</summary>
    public bool IsCompleted { get; }

    /// <summary>
    /// Returns once the result can be used: on the host for a CPU backend; for a device backend once later work on the
    /// tensor's stream is ordered after the collective (no host wait, as torch's <c>work.wait()</c> on NCCL).
    /// </summary>
    public void Wait();
}

/// <summary>A collective that had already finished when it was returned.</summary>
internal sealed class CompletedCollectiveWork : ICollectiveWork
{
    public static CompletedCollectiveWork Instance { get; } = new();

    public bool IsCompleted => true;

    public void Wait()
    {
    }
}
