namespace Kiln.Data.Remote;

/// <summary>Which failures of a remote read may go away by themselves, and how they are named.</summary>
internal static class Transient
{
    /// <summary>
    /// <paramref name="error"/> as a transient <see cref="RemoteStorageException"/> naming
    /// <paramref name="location"/>, or null when retrying cannot help. Connection errors, broken or
    /// timed-out responses and transient statuses (408, 429, 5xx) are transient; the caller checks its
    /// own cancellation token first.
    /// </summary>
    public static RemoteStorageException? Classify(Exception error, string location, string? where = null) => error switch
    {
        RemoteStorageException known => known.IsTransient ? known : null,
        HttpRequestException or IOException or TimeoutException or OperationCanceledException =>
            new RemoteStorageException($"{location}: {error.Message}{where}", error) { IsTransient = true },
        _ => null,
    };
}
