namespace Kiln.Runtime;

/// <summary>What was found of an optional native component (MPI, NCCL, the CUDA driver).</summary>
/// <param name="Name">The component, as users know it ("MPI", "NCCL").</param>
/// <param name="Path">The library that was loaded; null when none was found.</param>
/// <param name="Version">The version the library reports about itself; null when not found or not asked.</param>
/// <param name="Problem">Why the component is missing or unusable; null when it works.</param>
public sealed record NativeComponent(string Name, string? Path, string? Version, string? Problem)
{
    /// <summary>True when the library was loaded and answered.</summary>
    public bool IsAvailable => Path is not null && Problem is null;

    /// <summary>One line for a person: "Open MPI v4.1.4 (/usr/lib/…/libmpi.so.40)" or "not found (…)".</summary>
    public override string ToString() =>
        IsAvailable ? $"{Version} ({Path})" : $"not found ({Problem})";
}
