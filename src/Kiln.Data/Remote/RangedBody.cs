namespace Kiln.Data.Remote;

/// <summary>
/// One open response of a <see cref="RangedObjectSource"/>: a body that holds the object's bytes from
/// <see cref="Start"/> to <see cref="End"/>, or the answer that the range lies past the object's end.
/// <see cref="ReadAsync"/> gives up on a body that stays silent longer than the read timeout, or whose
/// read is cancelled, by disposing the response (which also ends a blocking read on another thread).
/// </summary>
internal sealed class RangedBody : IDisposable
{
    private readonly Stream? _content;
    private readonly IDisposable? _owner;
    private readonly CancellationTokenSource _idle = new();
    private readonly CancellationTokenRegistration _idleRegistration;
    private int _disposed;

    private RangedBody(Stream? content, IDisposable? owner, long start, long? end, long? objectLength, string? etag, bool unsatisfiable)
    {
        _content = content;
        _owner = owner;
        Start = start;
        End = end;
        ObjectLength = objectLength;
        ETag = etag;
        Unsatisfiable = unsatisfiable;
        _idleRegistration = _idle.Token.UnsafeRegister(static state => ((RangedBody)state!).Dispose(), this);
    }

    /// <summary>The object offset of the body's first byte (0 where a server ignored the range).</summary>
    public long Start { get; }

    /// <summary>The object offset just past the body's last byte, or null where the body runs to an unannounced end.</summary>
    public long? End { get; }

    /// <summary>The whole object's length, where the server said it.</summary>
    public long? ObjectLength { get; }

    /// <summary>The object's strong entity tag (with its quotes), where the server gave one.</summary>
    public string? ETag { get; }

    /// <summary>The server answered that the range starts past the object's end (HTTP 416); there is no body.</summary>
    public bool Unsatisfiable { get; }

    /// <summary>Whether a read waited past the read timeout (and so disposed the body).</summary>
    public bool TimedOut => _idle.IsCancellationRequested;

    /// <summary>A body holding the object's bytes from <paramref name="start"/> up to <paramref name="end"/> (exclusive).</summary>
    public static RangedBody Create(Stream content, IDisposable owner, long start, long? end, long? objectLength, string? etag) =>
        new(content, owner, start, end, objectLength, etag, unsatisfiable: false);

    /// <summary>The answer "range not satisfiable", with the object's length where the server said it.</summary>
    public static RangedBody PastTheEnd(long? objectLength) =>
        new(content: null, owner: null, start: 0, end: null, objectLength, etag: null, unsatisfiable: true);

    /// <summary>
    /// Reads up to <paramref name="buffer"/>'s length; synchronously when <paramref name="useAsync"/> is
    /// false, disposing the body on <paramref name="cancellationToken"/> so that a blocking read ends.
    /// </summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, TimeSpan timeout, bool useAsync, CancellationToken cancellationToken)
    {
        Stream content = _content ?? throw new InvalidOperationException("A range past the object's end has no body.");
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        CancellationTokenRegistration cancelled = useAsync || !cancellationToken.CanBeCanceled
            ? default
            : cancellationToken.UnsafeRegister(static state => ((RangedBody)state!).Dispose(), this);
        try
        {
            if (timeout != Timeout.InfiniteTimeSpan)
            {
                _idle.CancelAfter(timeout);
            }

            return useAsync
                ? await content.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)
                : content.Read(buffer.Span);
        }
        finally
        {
            cancelled.Dispose();
            if (timeout != Timeout.InfiniteTimeSpan && _disposed == 0)
            {
                _idle.CancelAfter(Timeout.InfiniteTimeSpan);
            }
        }
    }

    /// <summary>Ends the response; safe to call from any thread, more than once.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _content?.Dispose();
        _owner?.Dispose();
    }

    /// <summary>Ends the response and its timer; called by the reading thread when done with the body.</summary>
    public void Close()
    {
        _idleRegistration.Dispose();
        Dispose();
        _idle.Dispose();
    }
}
