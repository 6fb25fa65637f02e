using Microsoft.Extensions.Logging;

namespace Kiln.Distributed;

/// <summary>Settings of a process group; immutable once built.</summary>
public sealed class ProcessGroupOptions
{
    private readonly TimeSpan _timeout = TimeSpan.FromMinutes(10);

    /// <summary>The settings every group gets unless told otherwise.</summary>
    public static ProcessGroupOptions Default { get; } = new();

    /// <summary>
    /// torch.distributed's <c>timeout</c>, default 10 minutes. The mpi backend's watchdog aborts the whole job when one
    /// collective (or send/recv) runs longer, after writing which one did not complete to stderr (and to
    /// <see cref="Logger"/>); <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> turns it off. The nccl backend
    /// bounds its start-up (the unique-id hand-over) with it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Zero or negative, other than the infinite time span.</exception>
    public TimeSpan Timeout
    {
        get => _timeout;
        init => _timeout = value > TimeSpan.Zero || value == System.Threading.Timeout.InfiniteTimeSpan
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "a collective timeout must be positive, or Timeout.InfiniteTimeSpan for none");
    }

    /// <summary>Where the group logs a collective that timed out (besides stderr); none when null.</summary>
    public ILogger? Logger { get; init; }
}
