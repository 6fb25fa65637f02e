using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// A client of <see cref="TcpStoreServer"/>: one connection, requests multiplexed over it (a WAIT does not hold up other
/// calls). When the connection is lost every outstanding and later call throws <see cref="IOException"/>.
/// </summary>
/// <remarks>Thread-safe. Dispose to close the connection.</remarks>
internal sealed class TcpStoreClient : IKeyValueStore
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly ConcurrentDictionary<uint, TaskCompletionSource<byte[]>> _pending = new();
    private readonly CancellationTokenSource _closing = new();
    private readonly string _endpoint;
    private Task _readLoop = Task.CompletedTask;
    private uint _nextId;
    private volatile Exception? _failure;

    private TcpStoreClient(Socket socket, string endpoint)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _endpoint = endpoint;
    }

    /// <summary>
    /// Connects to a store at <paramref name="host"/>:<paramref name="port"/>, retrying refused connections and name
    /// lookups (the hosting agent may start later; DNS may lag on Kubernetes) until <paramref name="timeout"/>.
    /// </summary>
    /// <exception cref="LaunchException">No store answered within the timeout.</exception>
    public static async Task<TcpStoreClient> ConnectAsync(string host, int port, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        Exception? last = null;
        while (true)
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(host, port, deadline.Token).ConfigureAwait(false);
                var client = new TcpStoreClient(socket, $"{host}:{port}");
                await client.HandshakeAsync(deadline.Token).ConfigureAwait(false);
                client._readLoop = client.ReadLoopAsync();
                return client;
            }
            catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException)
            {
                socket.Dispose();
                last = ex;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                break;
            }
            catch
            {
                socket.Dispose();
                throw;
            }
            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100), deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                break;
            }
        }
        throw new LaunchException($"No rendezvous store answered at {host}:{port} within {timeout.TotalSeconds:0.###} s{(last is null ? "" : $" ({last.Message})")}.");
    }

    /// <inheritdoc/>
    public async Task SetAsync(string key, byte[] value, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        await CallAsync(StoreOp.Set, w =>
        {
            TcpStoreProtocol.WriteString(w, key);
            TcpStoreProtocol.WriteBytes(w, value);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        byte[] body = await CallAsync(StoreOp.Get, w => TcpStoreProtocol.WriteString(w, key), cancellationToken).ConfigureAwait(false);
        return Fields(body).ReadBytes();
    }

    /// <inheritdoc/>
    public async Task<long> AddAsync(string key, long amount, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        byte[] body = await CallAsync(StoreOp.Add, w =>
        {
            TcpStoreProtocol.WriteString(w, key);
            TcpStoreProtocol.WriteInt64(w, amount);
        }, cancellationToken).ConfigureAwait(false);
        return Fields(body).ReadInt64();
    }

    /// <inheritdoc/>
    public async Task<byte[]> CompareSetAsync(string key, byte[]? expected, byte[] desired, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(desired);
        byte[] body = await CallAsync(StoreOp.CompareSet, w =>
        {
            TcpStoreProtocol.WriteString(w, key);
            TcpStoreProtocol.WriteBytes(w, expected, expected is null);
            TcpStoreProtocol.WriteBytes(w, desired);
        }, cancellationToken).ConfigureAwait(false);
        return Fields(body).ReadBytes() ?? [];
    }

    /// <inheritdoc/>
    public async Task WaitAsync(IReadOnlyList<string> keys, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keys);
        await CallAsync(StoreOp.Wait, w =>
        {
            TcpStoreProtocol.WriteInt64(w, keys.Count);
            foreach (string key in keys)
            {
                TcpStoreProtocol.WriteString(w, key);
            }
            TcpStoreProtocol.WriteInt64(w, (long)timeout.TotalMilliseconds);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async Task<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        byte[] body = await CallAsync(StoreOp.Delete, w => TcpStoreProtocol.WriteString(w, key), cancellationToken).ConfigureAwait(false);
        return Fields(body).ReadByte() != 0;
    }

    /// <summary>A round trip that changes nothing.</summary>
    public Task PingAsync(CancellationToken cancellationToken) => CallAsync(StoreOp.Ping, static _ => { }, cancellationToken);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_closing.IsCancellationRequested)
        {
            return;
        }
        await _closing.CancelAsync().ConfigureAwait(false);
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
            // Already gone.
        }
        _socket.Dispose();
        try
        {
            await _readLoop.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            // The loop ends as the socket closes.
        }
        await _stream.DisposeAsync().ConfigureAwait(false);
        _writeGate.Dispose();
        _closing.Dispose();
    }

    private static FrameReader Fields(byte[] body)
    {
        var reader = new FrameReader(body);
        reader.ReadUInt32();
        reader.ReadByte();
        return reader;
    }

    private async Task HandshakeAsync(CancellationToken cancellationToken)
    {
        byte[] hello = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(hello, TcpStoreProtocol.Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(hello.AsSpan(4), TcpStoreProtocol.Version);
        await _stream.WriteAsync(hello, cancellationToken).ConfigureAwait(false);
        byte[] answer = new byte[8];
        await _stream.ReadExactlyAsync(answer, cancellationToken).ConfigureAwait(false);
        if (!answer.AsSpan().SequenceEqual(hello))
        {
            throw new InvalidDataException($"{_endpoint} is not a Kiln rendezvous store (protocol {TcpStoreProtocol.Version}).");
        }
    }

    private async Task<byte[]> CallAsync(StoreOp op, Action<ArrayBufferWriter<byte>> writeFields, CancellationToken cancellationToken)
    {
        ThrowIfFailed();
        uint id = Interlocked.Increment(ref _nextId);
        ArrayBufferWriter<byte> writer = TcpStoreProtocol.StartFrame(id, (byte)op);
        writeFields(writer);
        ReadOnlyMemory<byte> frame = TcpStoreProtocol.EndFrame(writer);
        var response = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = response;
        try
        {
            await _writeGate.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await _stream.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _writeGate.Release();
            }
            ThrowIfFailed();
            byte[] body = await response.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            var reader = new FrameReader(body);
            reader.ReadUInt32();
            var status = (StoreStatus)reader.ReadByte();
            return status switch
            {
                StoreStatus.Ok => body,
                StoreStatus.Timeout => throw new TimeoutException(reader.ReadString()),
                _ => throw new InvalidOperationException($"Store at {_endpoint}: {reader.ReadString()}"),
            };
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException || (ex is IOException && _failure is null))
        {
            throw new IOException($"The rendezvous store connection to {_endpoint} is lost ({ex.Message}).", ex);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private void ThrowIfFailed()
    {
        if (_failure is { } failure)
        {
            throw new IOException($"The rendezvous store connection to {_endpoint} is lost ({failure.Message}).", failure);
        }
    }

    private async Task ReadLoopAsync()
    {
        Exception failure;
        try
        {
            while (true)
            {
                byte[]? body = await TcpStoreProtocol.ReadFrameAsync(_stream, _closing.Token).ConfigureAwait(false);
                if (body is null)
                {
                    failure = new EndOfStreamException("the store closed the connection");
                    break;
                }
                uint id = BinaryPrimitives.ReadUInt32LittleEndian(body);
                if (_pending.TryGetValue(id, out TaskCompletionSource<byte[]>? response))
                {
                    response.TrySetResult(body);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException or InvalidDataException)
        {
            failure = ex;
        }
        _failure = failure;
        foreach (TaskCompletionSource<byte[]> response in _pending.Values)
        {
            response.TrySetException(new IOException($"The rendezvous store connection to {_endpoint} is lost ({failure.Message}).", failure));
        }
    }
}
