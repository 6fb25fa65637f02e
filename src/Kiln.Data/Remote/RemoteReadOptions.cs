namespace Kiln.Data.Remote;

/// <summary>
/// How Kiln reads one remote object: the size of each ranged request, how often and how patiently a
/// transient failure is retried, and how long a response may stay silent. Shared by the HTTP reader
/// and the S3 object store; every setter checks its value.
/// </summary>
public sealed class RemoteReadOptions
{
    /// <summary>The default <see cref="ChunkSize"/>: 8 MiB.</summary>
    public const long DefaultChunkSize = 8L * 1024 * 1024;

    private long _chunkSize = DefaultChunkSize;
    private int _maxRetries = 5;
    private TimeSpan _initialBackoff = TimeSpan.FromMilliseconds(200);
    private TimeSpan _maxBackoff = TimeSpan.FromSeconds(10);
    private TimeSpan _readTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// The most bytes one request asks for (<c>Range: bytes=start-end</c>); a reader moves on to the next
    /// request when a chunk is consumed, so a broken connection costs at most one chunk's worth of
    /// re-sent data.
    /// </summary>
    /// <value>At least 1; the default is <see cref="DefaultChunkSize"/> (8 MiB).</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public long ChunkSize
    {
        get => _chunkSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _chunkSize = value;
        }
    }

    /// <summary>
    /// How many times in a row a transient failure (connection error, broken or silent response, HTTP
    /// 408, 429 or 5xx) is retried before the read fails. The count starts again whenever bytes arrive,
    /// so a long read that breaks now and then, but always makes progress, is never given up.
    /// </summary>
    /// <value>0 to 100; the default is 5.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 0 to 100.</exception>
    public int MaxRetries
    {
        get => _maxRetries;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 100);
            _maxRetries = value;
        }
    }

    /// <summary>
    /// The wait before the first retry; each further retry in a row doubles it, up to
    /// <see cref="MaxBackoff"/>, and a random half of it is taken off (jitter). A server's
    /// <c>Retry-After</c> replaces the computed wait, capped at <see cref="MaxBackoff"/>.
    /// </summary>
    /// <value>0 to 1 hour; the default is 200 ms.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 0 to 1 hour.</exception>
    public TimeSpan InitialBackoff
    {
        get => _initialBackoff;
        set
        {
            CheckDuration(value);
            _initialBackoff = value;
        }
    }

    /// <summary>The longest wait between two attempts.</summary>
    /// <value>0 to 1 hour; the default is 10 s.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 0 to 1 hour.</exception>
    public TimeSpan MaxBackoff
    {
        get => _maxBackoff;
        set
        {
            CheckDuration(value);
            _maxBackoff = value;
        }
    }

    /// <summary>
    /// How long one read of a response body may wait for its next bytes; past it, the response is
    /// abandoned and the read resumes from the last byte received, as after a broken connection.
    /// <see cref="Timeout.InfiniteTimeSpan"/> waits forever.
    /// </summary>
    /// <value>1 ms to 1 hour, or <see cref="Timeout.InfiniteTimeSpan"/>; the default is 60 s.</value>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside 1 ms to 1 hour and not infinite.</exception>
    public TimeSpan ReadTimeout
    {
        get => _readTimeout;
        set
        {
            if (value != Timeout.InfiniteTimeSpan)
            {
                ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.FromMilliseconds(1));
                ArgumentOutOfRangeException.ThrowIfGreaterThan(value, TimeSpan.FromHours(1));
            }

            _readTimeout = value;
        }
    }

    /// <summary>
    /// Called before each wait for a retry, on the reading thread, for logs and metrics; it must not
    /// throw. <see langword="null"/> (the default) calls nothing.
    /// </summary>
    public Action<RemoteRetry>? OnRetry { get; set; }

    private static void CheckDuration(TimeSpan value)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(value, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(value, TimeSpan.FromHours(1));
    }
}
