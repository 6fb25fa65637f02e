namespace Kiln.Data.Remote;

/// <summary>One object of an S3 listing.</summary>
/// <param name="Key">The full key.</param>
/// <param name="Size">The object's length in bytes.</param>
/// <param name="ETag">The object's entity tag (with quotes), to pin the version a read resumes.</param>
internal sealed record S3ObjectInfo(string Key, long Size, string? ETag);
