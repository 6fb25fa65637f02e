namespace Kiln.Data.Remote;

/// <summary>
/// Where an S3-compatible object store is and how to sign in: the endpoint, explicit credentials (or
/// none, for anonymous access), the signing region, the listing page size, and the read settings. Kiln
/// reads no environment variables or AWS profile files for these: the host fills them in.
/// </summary>
public sealed class S3StoreOptions
{
    private int _listPageSize = 1000;
    private string _region = "us-east-1";
    private RemoteReadOptions _read = new();

    /// <summary>
    /// The store's endpoint, addressed path-style (<c>{ServiceUrl}/{bucket}/{key}</c>): e.g.
    /// <c>http://127.0.0.1:9000</c> for a local server or <c>https://s3.eu-west-1.amazonaws.com</c> for AWS.
    /// Required.
    /// </summary>
    public Uri? ServiceUrl { get; set; }

    /// <summary>The access key id; with <see cref="SecretAccessKey"/>, or neither for anonymous requests.</summary>
    public string? AccessKeyId { get; set; }

    /// <summary>The secret access key that goes with <see cref="AccessKeyId"/>.</summary>
    public string? SecretAccessKey { get; set; }

    /// <summary>A session token for temporary credentials, or <see langword="null"/>.</summary>
    public string? SessionToken { get; set; }

    /// <summary>The region requests are signed for.</summary>
    /// <value>Not empty; the default is <c>us-east-1</c>.</value>
    /// <exception cref="ArgumentException">The value is null or blank.</exception>
    public string Region
    {
        get => _region;
        set
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(value);
            _region = value;
        }
    }

    /// <summary>How many keys one listing request asks for (<c>MaxKeys</c>); a listing follows continuation tokens until the end.</summary>
    /// <value>1 to 1000; the default is 1000.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 to 1000.</exception>
    public int ListPageSize
    {
        get => _listPageSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 1000);
            _listPageSize = value;
        }
    }

    /// <summary>
    /// Chunk size, retries, backoff and read timeout of object reads. <see cref="RemoteReadOptions.MaxRetries"/>
    /// also sets the AWS SDK's own retries of each request.
    /// </summary>
    /// <exception cref="ArgumentNullException">The value is null.</exception>
    public RemoteReadOptions Read
    {
        get => _read;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            _read = value;
        }
    }
}
