namespace Kiln.Data.Remote;

/// <summary>
/// A remote object could not be listed or read. The message names the object (the URL, without its
/// query, or <c>s3://bucket/key</c>) and the server's answer, e.g.
/// <c>GET http://127.0.0.1:8080/x.tar: 404 Not Found</c> or
/// <c>s3://data/x.tar: NoSuchKey (404 Not Found): The specified key does not exist.</c>
/// </summary>
public sealed class RemoteStorageException : Exception
{
    /// <summary>Creates the exception with a message naming the object and what went wrong.</summary>
    public RemoteStorageException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the failure underneath.</summary>
    public RemoteStorageException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception.</summary>
    public RemoteStorageException()
    {
    }

    /// <summary>The HTTP status the server answered with, or <see langword="null"/> when none came (e.g. a connection error).</summary>
    public int? StatusCode { get; init; }

    /// <summary>The S3 error code (<c>NoSuchKey</c>, <c>NoSuchBucket</c>, <c>AccessDenied</c>…), or <see langword="null"/> for plain HTTP.</summary>
    public string? ErrorCode { get; init; }

    /// <summary>
    /// Whether the failure may go away by itself (connection error, 408, 429, 5xx, a silent response):
    /// true also when the reader gave up after its retries, so a caller may try again later.
    /// </summary>
    public bool IsTransient { get; init; }

    /// <summary>The wait the server asked for (<c>Retry-After</c>), if any.</summary>
    internal TimeSpan? RetryAfter { get; init; }
}
