namespace Kiln.Data.Remote;

/// <summary>
/// Where a <see cref="RemoteObjectStream"/> gets its bytes: one remote object that answers ranged
/// requests (an HTTP URL, an S3 key). Each method does its I/O synchronously when <c>useAsync</c> is
/// false, so that the returned task is already complete and a blocking <see cref="Stream.Read(byte[], int, int)"/>
/// never waits on the thread pool.
/// </summary>
internal abstract class RangedObjectSource
{
    /// <summary>The object as errors name it: <c>GET http://host/path</c> or <c>s3://bucket/key</c>.</summary>
    public abstract string Location { get; }

    /// <summary>
    /// Whether the stream retries a transient failure to open a range itself; false where the client
    /// underneath already retried it (the AWS SDK).
    /// </summary>
    public abstract bool RetriesOpen { get; }

    /// <summary>
    /// Asks for bytes <paramref name="start"/> to <paramref name="endInclusive"/> (or to the end when
    /// null), only if the object still has entity tag <paramref name="ifMatch"/> when one is given.
    /// Throws <see cref="RemoteStorageException"/> for an error answer (transient for 408, 429, 5xx).
    /// </summary>
    public abstract ValueTask<RangedBody> OpenAsync(long start, long? endInclusive, string? ifMatch, bool useAsync, CancellationToken cancellationToken);

    /// <summary>The object's length in bytes, asked of the server without reading the object.</summary>
    public abstract ValueTask<long> GetLengthAsync(bool useAsync, CancellationToken cancellationToken);
}
