namespace Kiln.Data.Remote;

/// <summary>One retry of a remote read, as passed to <see cref="RemoteReadOptions.OnRetry"/>.</summary>
/// <param name="Location">The object: <c>GET https://host/path</c> or <c>s3://bucket/key</c>.</param>
/// <param name="Attempt">The failures in a row so far, counting this one (1 for the first retry).</param>
/// <param name="Delay">How long the reader waits before the next attempt.</param>
/// <param name="Error">The transient failure being retried; its message names the object.</param>
public readonly record struct RemoteRetry(string Location, int Attempt, TimeSpan Delay, RemoteStorageException Error);
