namespace Kiln.Data.Remote;

/// <summary>
/// Reads objects behind http and https URLs with <c>Range</c> requests, through an
/// <see cref="HttpClient"/> the host owns (it should keep automatic decompression off, the default).
/// Every method comes as a blocking call, for the pipeline's dedicated threads, and as an async one.
/// Thread-safe: one reader can serve many streams at once.
/// </summary>
internal sealed class HttpObjectReader
{
    private readonly HttpClient _client;

    /// <summary>Creates a reader over <paramref name="client"/>, which stays the caller's to dispose.</summary>
    public HttpObjectReader(HttpClient client, RemoteReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        Options = options ?? new RemoteReadOptions();
    }

    /// <summary>The chunk size, retry and timeout settings every stream of this reader uses.</summary>
    public RemoteReadOptions Options { get; }

    /// <summary>The object's length in bytes (HEAD, or the Content-Range of a one-byte GET), retrying transient failures.</summary>
    /// <exception cref="RemoteStorageException">The server refused (e.g. 404) or kept failing; the message names the URL and status.</exception>
    public long GetLength(Uri uri, CancellationToken cancellationToken = default) =>
        Sync.Complete(GetLengthCoreAsync(uri, useAsync: false, cancellationToken));

    /// <inheritdoc cref="GetLength(Uri, CancellationToken)"/>
    public Task<long> GetLengthAsync(Uri uri, CancellationToken cancellationToken = default) =>
        GetLengthCoreAsync(uri, useAsync: true, cancellationToken).AsTask();

    /// <summary>
    /// Opens the object at byte <paramref name="offset"/> (0 to its length; at the length the stream is
    /// empty) and makes the first request, so a missing object fails here. Pass the
    /// <see cref="RemoteObjectStream.ETag"/> saved with a checkpoint as <paramref name="ifMatch"/> to resume
    /// the same version of the object. <paramref name="cancellationToken"/> also cancels the stream's
    /// blocking reads.
    /// </summary>
    /// <exception cref="RemoteStorageException">The server refused (e.g. 404), kept failing, or the offset lies past the end.</exception>
    public RemoteObjectStream OpenRead(Uri uri, long offset = 0, string? ifMatch = null, CancellationToken cancellationToken = default) =>
        Sync.Complete(OpenCoreAsync(uri, offset, ifMatch, useAsync: false, cancellationToken));

    /// <inheritdoc cref="OpenRead(Uri, long, string?, CancellationToken)"/>
    public Task<RemoteObjectStream> OpenReadAsync(Uri uri, long offset = 0, string? ifMatch = null, CancellationToken cancellationToken = default) =>
        OpenCoreAsync(uri, offset, ifMatch, useAsync: true, cancellationToken).AsTask();

    private ValueTask<RemoteObjectStream> OpenCoreAsync(Uri uri, long offset, string? ifMatch, bool useAsync, CancellationToken cancellationToken)
    {
        HttpRangeSource.Validate(uri, nameof(uri));
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        return RemoteObjectStream.OpenAsync(new HttpRangeSource(_client, uri), Options, offset, NormalizeETag(ifMatch), useAsync, cancellationToken);
    }

    private async ValueTask<long> GetLengthCoreAsync(Uri uri, bool useAsync, CancellationToken cancellationToken)
    {
        HttpRangeSource.Validate(uri, nameof(uri));
        var source = new HttpRangeSource(_client, uri);
        var retries = new RetryBudget(Options, $"HEAD {HttpRangeSource.Display(uri)}");
        while (true)
        {
            try
            {
                return await source.GetLengthAsync(useAsync, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception error) when (!cancellationToken.IsCancellationRequested
                && Transient.Classify(error, $"HEAD {HttpRangeSource.Display(uri)}") is RemoteStorageException transient)
            {
                await retries.FailedAsync(transient, useAsync, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Entity tags travel quoted; accept one saved without its quotes.</summary>
    internal static string? NormalizeETag(string? etag) =>
        etag is null || etag.StartsWith('"') || etag.StartsWith("W/", StringComparison.Ordinal) ? etag : $"\"{etag}\"";
}
