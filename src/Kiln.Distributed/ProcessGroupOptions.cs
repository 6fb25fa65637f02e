namespace Kiln.Distributed;

/// <summary>Settings of a process group; immutable once built.</summary>
public sealed class ProcessGroupOptions
{
    /// <summary>The settings every group gets unless told otherwise.</summary>
    public static ProcessGroupOptions Default { get; } = new();

    /// <summary>
    /// How long one collective may wait for the other ranks before the process fails with an error naming the
    /// collective and its rank (torch.distributed's <c>timeout</c>). Default 10 minutes.
    /// </summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(10);
}
