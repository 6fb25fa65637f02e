using System.Buffers;

namespace Kiln.Data.Remote;

/// <summary>
/// A forward-only stream over one remote object, from any starting offset: it asks for the object in
/// ranged requests of <see cref="RemoteReadOptions.ChunkSize"/> bytes and, when a response breaks, stalls
/// or is refused for a transient reason, asks again from the last byte received (bounded by
/// <see cref="RemoteReadOptions.MaxRetries"/> failures in a row, with backoff).
/// </summary>
/// <remarks>
/// <para><see cref="Read(byte[], int, int)"/> does blocking I/O on the calling thread (meant for the
/// pipeline's dedicated threads) and is cancelled by the token given when the stream was opened;
/// <see cref="ReadAsync(Memory{byte}, CancellationToken)"/> also honours its own token.</para>
/// <para>The object must not change while it is read: the first strong entity tag seen (or the one the
/// caller passed) is sent as <c>If-Match</c> with every later request, and an answer with another tag
/// or another length fails the read instead of splicing two versions together.</para>
/// <para>A server that ignores the range (200 instead of 206) is read from its first byte, and the bytes
/// before the wanted offset are read and dropped; <see cref="RangeIgnored"/> tells it happened.</para>
/// <para>Not thread-safe, like any <see cref="Stream"/>: one reader at a time.</para>
/// </remarks>
internal sealed class RemoteObjectStream : Stream
{
    private const int SkipBufferSize = 81920;

    private readonly RangedObjectSource _source;
    private readonly RemoteReadOptions _options;
    private readonly RetryBudget _retries;
    private readonly CancellationToken _streamToken;
    private RangedBody? _body;
    private long _position;
    private long? _objectLength;
    private string? _etag;
    private bool _disposed;

    private RemoteObjectStream(RangedObjectSource source, RemoteReadOptions options, long offset, string? ifMatch, CancellationToken streamToken)
    {
        _source = source;
        _options = options;
        _retries = new RetryBudget(options, source.Location);
        _position = offset;
        _etag = ifMatch;
        _streamToken = streamToken;
    }

    /// <summary>The object as errors name it: <c>GET http://host/path</c> or <c>s3://bucket/key</c>.</summary>
    public string Location => _source.Location;

    /// <summary>The object's length in bytes, once a response has said it (after opening, for any usual server).</summary>
    public long? ObjectLength => _objectLength;

    /// <summary>The object's strong entity tag (with quotes), if known: keep it with a checkpoint and pass it back to resume the same version.</summary>
    public string? ETag => _etag;

    /// <summary>How many times a request was retried so far.</summary>
    public int Retries => _retries.Retries;

    /// <summary>Whether the server answered a ranged request with the whole object, so leading bytes were skipped.</summary>
    public bool RangeIgnored { get; private set; }

    /// <inheritdoc/>
    public override bool CanRead => !_disposed;

    /// <inheritdoc/>
    public override bool CanSeek => false;

    /// <inheritdoc/>
    public override bool CanWrite => false;

    /// <summary>Not supported: the stream does not seek; see <see cref="ObjectLength"/>.</summary>
    public override long Length => throw new NotSupportedException("A remote object stream does not seek; use ObjectLength.");

    /// <summary>The object offset of the next byte <see cref="Read(byte[], int, int)"/> returns: save it to resume later. Setting is not supported.</summary>
    public override long Position
    {
        get => _position;
        set => throw new NotSupportedException("A remote object stream does not seek; open a new one at the offset.");
    }

    /// <summary>
    /// Creates the stream and makes its first request, so that a missing object or a refused request
    /// fails here; synchronous when <paramref name="useAsync"/> is false.
    /// </summary>
    internal static async ValueTask<RemoteObjectStream> OpenAsync(
        RangedObjectSource source, RemoteReadOptions options, long offset, string? ifMatch, bool useAsync, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        var stream = new RemoteObjectStream(source, options, offset, ifMatch, cancellationToken);
        try
        {
            await stream.OpenBodyAsync(useAsync, cancellationToken).ConfigureAwait(false);
            return stream;
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Reads blocking on this thread; cancelled by the token the stream was opened with.</summary>
    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Sync.Complete(ReadCoreAsync(buffer.AsMemory(offset, count), useAsync: false, _streamToken));
    }

    /// <inheritdoc/>
    public override int Read(Span<byte> buffer)
    {
        byte[] rented = ArrayPool<byte>.Shared.Rent(buffer.Length);
        try
        {
            int read = Sync.Complete(ReadCoreAsync(rented.AsMemory(0, buffer.Length), useAsync: false, _streamToken));
            rented.AsSpan(0, read).CopyTo(buffer);
            return read;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <inheritdoc/>
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
    }

    /// <summary>Reads asynchronously; cancelled by <paramref name="cancellationToken"/> or by the token the stream was opened with.</summary>
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (!_streamToken.CanBeCanceled || _streamToken == cancellationToken)
        {
            return await ReadCoreAsync(buffer, useAsync: true, cancellationToken).ConfigureAwait(false);
        }

        if (!cancellationToken.CanBeCanceled)
        {
            return await ReadCoreAsync(buffer, useAsync: true, _streamToken).ConfigureAwait(false);
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_streamToken, cancellationToken);
        return await ReadCoreAsync(buffer, useAsync: true, linked.Token).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public override void Flush()
    {
    }

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("A remote object stream does not seek; open a new one at the offset.");

    /// <inheritdoc/>
    public override void SetLength(long value) => throw new NotSupportedException("A remote object stream is read-only.");

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("A remote object stream is read-only.");

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            _disposed = true;
            CloseBody();
        }

        base.Dispose(disposing);
    }

    private bool AtEnd => _objectLength is long length && _position >= length;

    private async ValueTask<int> ReadCoreAsync(Memory<byte> buffer, bool useAsync, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (buffer.IsEmpty)
        {
            return 0;
        }

        // Each turn either returns bytes, ends, or spends one retry of a bounded budget.
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_body is null)
            {
                if (AtEnd)
                {
                    return 0;
                }

                await OpenBodyAsync(useAsync, cancellationToken).ConfigureAwait(false);
                if (_body is null)
                {
                    return 0;
                }
            }

            RangedBody body = _body;
            long wanted = buffer.Length;
            if (body.End is long end)
            {
                wanted = Math.Min(wanted, end - _position);
                if (wanted <= 0)
                {
                    CloseBody();
                    continue;
                }
            }

            int read;
            try
            {
                read = await body.ReadAsync(buffer[..(int)wanted], _options.ReadTimeout, useAsync, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception error) when (error is not RemoteStorageException)
            {
                CloseBody();
                cancellationToken.ThrowIfCancellationRequested();
                RemoteStorageException transient = AsTransient(error, body) ?? throw Unexpected(error);
                await _retries.FailedAsync(transient, useAsync, cancellationToken).ConfigureAwait(false);
                continue;
            }

            if (read == 0)
            {
                CloseBody();
                if (body.End is null && (_objectLength is null || _position >= _objectLength))
                {
                    // A body of unannounced length ended: that is the object's end.
                    _objectLength ??= _position;
                    return 0;
                }

                string expected = body.End is long stop ? $"{stop - _position} more bytes" : $"{_objectLength - _position} more bytes";
                var premature = new RemoteStorageException($"{Location}: the response ended at byte {_position}, {expected} were announced") { IsTransient = true };
                await _retries.FailedAsync(premature, useAsync, cancellationToken).ConfigureAwait(false);
                continue;
            }

            _position += read;
            _retries.Progressed();
            if (body.End == _position)
            {
                // Chunk consumed: its connection goes back to the pool, the next read asks for the next chunk.
                CloseBody();
            }

            return read;
        }
    }

    /// <summary>
    /// Opens a response at <see cref="_position"/>, retrying transient failures; leaves <see cref="_body"/>
    /// null when the position is the object's end.
    /// </summary>
    private async ValueTask OpenBodyAsync(bool useAsync, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            long start = _position;
            RangedBody? body = null;
            try
            {
                body = await _source.OpenAsync(start, ChunkEnd(start), _etag, useAsync, cancellationToken).ConfigureAwait(false);
                if (body.Unsatisfiable)
                {
                    body.Close();
                    long length = body.ObjectLength ?? await _source.GetLengthAsync(useAsync, cancellationToken).ConfigureAwait(false);
                    Accept(length, etag: null);
                    if (start == length)
                    {
                        return;
                    }

                    throw new RemoteStorageException($"{Location}: offset {start} is past the end of the object ({length} bytes)") { StatusCode = 416 };
                }

                Accept(body.ObjectLength, body.ETag);
                if (body.Start > start)
                {
                    throw new RemoteStorageException($"{Location}: asked for bytes from {start}, the server sent bytes from {body.Start}");
                }

                if (body.Start < start)
                {
                    RangeIgnored = true;
                    await SkipAsync(body, start - body.Start, useAsync, cancellationToken).ConfigureAwait(false);
                }

                _body = body;
                return;
            }
            catch (Exception error)
            {
                body?.Close();
                cancellationToken.ThrowIfCancellationRequested();
                RemoteStorageException? transient = error is RemoteStorageException known
                    ? (known.IsTransient && _source.RetriesOpen ? known : null)
                    : AsTransient(error, body);
                if (transient is null)
                {
                    throw;
                }

                await _retries.FailedAsync(transient, useAsync, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>The inclusive end of the next request: one chunk on, clamped to the object's end when known.</summary>
    private long ChunkEnd(long start)
    {
        long chunk = _options.ChunkSize;
        long end = start > long.MaxValue - chunk ? long.MaxValue - 1 : start + chunk - 1;
        if (_objectLength is long length && length > 0)
        {
            end = Math.Min(end, length - 1);
        }

        return end;
    }

    /// <summary>Checks that a response describes the same object as before, and remembers what it says.</summary>
    private void Accept(long? objectLength, string? etag)
    {
        if (objectLength is long length)
        {
            if (_objectLength is long known && known != length)
            {
                throw Changed($"its length went from {known} to {length} bytes");
            }

            _objectLength = length;
        }

        if (etag is not null)
        {
            if (_etag is not null && !string.Equals(_etag, etag, StringComparison.Ordinal))
            {
                throw Changed($"its entity tag went from {_etag} to {etag}");
            }

            _etag = etag;
        }
    }

    private RemoteStorageException Changed(string how) =>
        new($"{Location}: the object changed while it was read ({how}); start again from its beginning") { StatusCode = 412 };

    private async ValueTask SkipAsync(RangedBody body, long count, bool useAsync, CancellationToken cancellationToken)
    {
        byte[] scratch = ArrayPool<byte>.Shared.Rent((int)Math.Min(count, SkipBufferSize));
        try
        {
            while (count > 0)
            {
                int read = await body.ReadAsync(scratch.AsMemory(0, (int)Math.Min(count, scratch.Length)), _options.ReadTimeout, useAsync, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new RemoteStorageException($"{Location}: the response ended while skipping to byte {_position}") { IsTransient = true };
                }

                count -= read;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    private void CloseBody()
    {
        RangedBody? body = _body;
        _body = null;
        body?.Close();
    }

    /// <summary>The transient failure <paramref name="error"/> stands for, named for the object; null when it is not transient.</summary>
    private RemoteStorageException? AsTransient(Exception error, RangedBody? body)
    {
        if (body is { TimedOut: true })
        {
            return new RemoteStorageException($"{Location}: no data for {_options.ReadTimeout.TotalSeconds:0.###} s at byte {_position}", error) { IsTransient = true };
        }

        return Transient.Classify(error, Location, $" (at byte {_position})");
    }

    private RemoteStorageException Unexpected(Exception error) =>
        new($"{Location}: reading failed at byte {_position}: {error.Message}", error);
}
