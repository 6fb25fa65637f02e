namespace Kiln.Data.Nodes;

/// <summary>A file read whole, or a member of an archive: its name and bytes.</summary>
/// <param name="Name">The member's name inside its archive, or the file's path.</param>
/// <param name="Data">The bytes.</param>
/// <param name="Container">The archive or location it came from.</param>
public sealed record Blob(string Name, byte[] Data, string Container) : ISourced
{
    /// <inheritdoc />
    public string Source => Container == Name ? Name : $"{Container}:{Name}";
}

/// <summary>A WebDataset sample: the archive members sharing one key, by extension ("jpg", "cls", "json").</summary>
/// <param name="Key">The shared name before the first dot of the file name ("train/000123").</param>
/// <param name="Fields">The members' bytes by extension.</param>
/// <param name="Container">The tar shard.</param>
public sealed record Sample(string Key, IReadOnlyDictionary<string, byte[]> Fields, string Container) : ISourced
{
    /// <inheritdoc />
    public string Source => $"{Container}:{Key}";
}
