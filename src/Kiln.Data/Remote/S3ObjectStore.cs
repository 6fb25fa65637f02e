using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace Kiln.Data.Remote;

/// <summary>
/// Lists and reads objects of an S3-compatible store (AWS S3, MinIO, Ceph, s3rver…) through the AWS SDK,
/// path-style, against <see cref="S3StoreOptions.ServiceUrl"/>. Every method comes as a blocking call,
/// for the pipeline's dedicated threads, and as an async one; the SDK has only async calls on .NET, so the
/// blocking ones wait on them (no context is captured, nothing deadlocks). Thread-safe.
/// </summary>
internal sealed class S3ObjectStore : IDisposable
{
    private readonly IAmazonS3 _client;
    private readonly bool _ownsClient;
    private readonly S3StoreOptions _options;

    /// <summary>Creates a store with its own client, made from <paramref name="options"/> (see <see cref="CreateClient"/>).</summary>
    public S3ObjectStore(S3StoreOptions options)
        : this(CreateClient(options), options, ownsClient: true)
    {
    }

    /// <summary>Creates a store over <paramref name="client"/>, which stays the caller's to dispose; <paramref name="options"/> gives page size and read settings.</summary>
    public S3ObjectStore(IAmazonS3 client, S3StoreOptions options)
        : this(client, options, ownsClient: false)
    {
    }

    private S3ObjectStore(IAmazonS3 client, S3StoreOptions options, bool ownsClient)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        _client = client;
        _options = options;
        _ownsClient = ownsClient;
    }

    /// <summary>
    /// An S3 client for <paramref name="options"/>: path-style addressing, the given endpoint and region,
    /// explicit or anonymous credentials (never the SDK's environment/profile chain), SDK retries set to
    /// <see cref="RemoteReadOptions.MaxRetries"/>, checksums only where an operation requires them (many
    /// S3-compatible servers reject the SDK's default streaming checksums), and no process-wide HTTP
    /// client cache.
    /// </summary>
    /// <exception cref="ArgumentException">The endpoint is missing or not http(s), or only one of the two keys is given.</exception>
    internal static AmazonS3Client CreateClient(S3StoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Uri endpoint = options.ServiceUrl
            ?? throw new ArgumentException("S3StoreOptions.ServiceUrl is required: the store's endpoint, e.g. http://127.0.0.1:9000 or https://s3.us-east-1.amazonaws.com.", nameof(options));
        if (!endpoint.IsAbsoluteUri || (endpoint.Scheme != Uri.UriSchemeHttp && endpoint.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"S3StoreOptions.ServiceUrl '{endpoint}' is not an absolute http or https URL.", nameof(options));
        }

        var config = new AmazonS3Config
        {
            ServiceURL = endpoint.AbsoluteUri,
            ForcePathStyle = true,
            AuthenticationRegion = options.Region,
            MaxErrorRetry = options.Read.MaxRetries,
            RetryMode = RequestRetryMode.Standard,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            IgnoreConfiguredEndpointUrls = true,
            CacheHttpClient = false,
        };
        return new AmazonS3Client(Credentials(options), config);
    }

    /// <summary>
    /// Every object whose key starts with <paramref name="prefix"/>, with sizes, sorted by key (ordinal),
    /// following continuation tokens page by page (<see cref="S3StoreOptions.ListPageSize"/> keys each).
    /// </summary>
    /// <exception cref="RemoteStorageException">The store refused (NoSuchBucket, AccessDenied…); the message names the bucket, prefix and code.</exception>
    public IReadOnlyList<S3ObjectInfo> List(string bucket, string prefix = "", CancellationToken cancellationToken = default) =>
        Sync.Complete(ListCoreAsync(bucket, prefix, cancellationToken));

    /// <inheritdoc cref="List(string, string, CancellationToken)"/>
    public Task<IReadOnlyList<S3ObjectInfo>> ListAsync(string bucket, string prefix = "", CancellationToken cancellationToken = default) =>
        ListCoreAsync(bucket, prefix, cancellationToken).AsTask();

    /// <summary>The object's length in bytes (<c>HeadObject</c>).</summary>
    /// <exception cref="RemoteStorageException">The store refused; the message names the bucket, key and code.</exception>
    public long GetLength(string bucket, string key, CancellationToken cancellationToken = default) =>
        Sync.Complete(Source(bucket, key).GetLengthAsync(useAsync: false, cancellationToken));

    /// <inheritdoc cref="GetLength(string, string, CancellationToken)"/>
    public Task<long> GetLengthAsync(string bucket, string key, CancellationToken cancellationToken = default) =>
        Source(bucket, key).GetLengthAsync(useAsync: true, cancellationToken).AsTask();

    /// <summary>
    /// Opens the object at byte <paramref name="offset"/> (0 to its length; at the length the stream is
    /// empty) with ranged <c>GetObject</c> requests of <see cref="RemoteReadOptions.ChunkSize"/> bytes, and
    /// makes the first request, so a missing key or bucket fails here. Pass the
    /// <see cref="RemoteObjectStream.ETag"/> saved with a checkpoint as <paramref name="ifMatch"/> to resume
    /// the same version. <paramref name="cancellationToken"/> also cancels the stream's blocking reads.
    /// </summary>
    /// <exception cref="RemoteStorageException">NoSuchKey, NoSuchBucket, AccessDenied…, or an offset past the end; the message names bucket and key.</exception>
    public RemoteObjectStream OpenRead(string bucket, string key, long offset = 0, string? ifMatch = null, CancellationToken cancellationToken = default) =>
        Sync.Complete(RemoteObjectStream.OpenAsync(Source(bucket, key), _options.Read, offset, HttpObjectReader.NormalizeETag(ifMatch), useAsync: false, cancellationToken));

    /// <inheritdoc cref="OpenRead(string, string, long, string?, CancellationToken)"/>
    public Task<RemoteObjectStream> OpenReadAsync(string bucket, string key, long offset = 0, string? ifMatch = null, CancellationToken cancellationToken = default) =>
        RemoteObjectStream.OpenAsync(Source(bucket, key), _options.Read, offset, HttpObjectReader.NormalizeETag(ifMatch), useAsync: true, cancellationToken).AsTask();

    /// <summary>Disposes the client if this store created it.</summary>
    public void Dispose()
    {
        if (_ownsClient)
        {
            _client.Dispose();
        }
    }

    private static AWSCredentials Credentials(S3StoreOptions options)
    {
        bool hasId = !string.IsNullOrEmpty(options.AccessKeyId);
        bool hasSecret = !string.IsNullOrEmpty(options.SecretAccessKey);
        if (hasId != hasSecret)
        {
            throw new ArgumentException("S3StoreOptions needs both AccessKeyId and SecretAccessKey, or neither for anonymous access.", nameof(options));
        }

        if (!hasId)
        {
            return new AnonymousAWSCredentials();
        }

        return string.IsNullOrEmpty(options.SessionToken)
            ? new BasicAWSCredentials(options.AccessKeyId, options.SecretAccessKey)
            : new SessionAWSCredentials(options.AccessKeyId, options.SecretAccessKey, options.SessionToken);
    }

    private S3RangeSource Source(string bucket, string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(bucket);
        ArgumentException.ThrowIfNullOrEmpty(key);
        return new S3RangeSource(_client, bucket, key);
    }

    private async ValueTask<IReadOnlyList<S3ObjectInfo>> ListCoreAsync(string bucket, string prefix, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(bucket);
        ArgumentNullException.ThrowIfNull(prefix);
        string location = $"s3://{bucket}/{prefix}";
        var objects = new List<S3ObjectInfo>();
        var tokens = new HashSet<string>(StringComparer.Ordinal);
        string? token = null;

        // Bounded by the listing itself: each page must bring a continuation token never seen before.
        while (true)
        {
            var request = new ListObjectsV2Request
            {
                BucketName = bucket,
                Prefix = prefix,
                MaxKeys = _options.ListPageSize,
                ContinuationToken = token,
            };
            ListObjectsV2Response page;
            try
            {
                page = await _client.ListObjectsV2Async(request, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception error) when (S3Errors.From(error, location, cancellationToken) is RemoteStorageException named)
            {
                throw named;
            }

            foreach (S3Object entry in page.S3Objects ?? [])
            {
                objects.Add(new S3ObjectInfo(entry.Key, entry.Size ?? 0, string.IsNullOrEmpty(entry.ETag) ? null : entry.ETag));
            }

            if (page.IsTruncated != true)
            {
                break;
            }

            token = page.NextContinuationToken;
            if (string.IsNullOrEmpty(token) || !tokens.Add(token))
            {
                throw new RemoteStorageException($"{location}: the listing says it goes on but gives no new continuation token (after {objects.Count} keys)");
            }
        }

        objects.Sort(static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return objects;
    }
}
