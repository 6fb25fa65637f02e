using Microsoft.Extensions.Logging;

namespace Kiln.Distributed;

/// <summary>Settings of a process group; immutable once built.</summary>
public sealed class ProcessGroupOptions
{
    private readonly TimeSpan _timeout = TimeSpan.FromMinutes(10);

    /// <summary>The settings every group gets unless told otherwise.</summary>
    public static ProcessGroupOptions Default { get; } = new();

    /// <summary>
    /// How long one collective (or send/recv) may run before the group's watchdog writes which one did not complete to
    /// stderr (and to <see cref="Logger"/>) and aborts the whole job (torch.distributed's <c>timeout</c>).
    /// Default 10 minutes; <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> turns the watchdog off.
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
