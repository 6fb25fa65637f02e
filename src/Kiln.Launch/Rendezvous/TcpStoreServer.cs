using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// Kiln's embedded rendezvous store: a TCP server over a <see cref="MemoryKeyValueStore"/>, hosted by one agent of a
/// job (the c10d backend) and reached with <see cref="TcpStoreClient"/>. The protocol is in <see cref="TcpStoreProtocol"/>.
/// </summary>
/// <remarks>Dispose to stop listening and close every connection.</remarks>
internal sealed class TcpStoreServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly MemoryKeyValueStore _store = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly ILogger _logger;
    private readonly List<Task> _connections = [];
    private readonly Lock _gate = new();
    private Task _acceptLoop = Task.CompletedTask;

    private TcpStoreServer(TcpListener listener, ILogger logger)
    {
        _listener = listener;
        _logger = logger;
    }

    /// <summary>The endpoint the server listens on (the actual port when 0 was asked for).</summary>
    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>The store behind the server, for the hosting agent's own use without a socket.</summary>
    public IKeyValueStore Store => _store;

    /// <summary>Starts listening on <paramref name="endPoint"/>.</summary>
    /// <exception cref="SocketException">The address is not local or the port is taken.</exception>
    public static TcpStoreServer Start(IPEndPoint endPoint, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        var listener = new TcpListener(endPoint);
        listener.Start(512);
        var server = new TcpStoreServer(listener, logger ?? NullLogger.Instance);
        server._acceptLoop = server.AcceptLoopAsync();
        StoreLog.ServerStarted(server._logger, (IPEndPoint)listener.LocalEndpoint);
        return server;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_stopping.IsCancellationRequested)
        {
            return;
        }
        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        Task[] connections;
        lock (_gate)
        {
            connections = [.. _connections];
        }
        try
        {
            await Task.WhenAll([_acceptLoop, .. connections]).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or TimeoutException or SocketException or IOException or ObjectDisposedException)
        {
            // Connections end as their sockets close.
        }
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        CancellationToken stopping = _stopping.Token;
        while (!stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }
            socket.NoDelay = true;
            lock (_gate)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(ServeConnectionAsync(socket, stopping));
            }
        }
    }

    private async Task ServeConnectionAsync(Socket socket, CancellationToken stopping)
    {
        using var ownedSocket = socket;
        var stream = new NetworkStream(socket, ownsSocket: false);
        await using var ownedStream = stream.ConfigureAwait(false);
        using var writeGate = new SemaphoreSlim(1, 1);
        using var connectionClosed = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var pending = new List<Task>();
        try
        {
            byte[] hello = new byte[8];
            using (var handshakeTimeout = CancellationTokenSource.CreateLinkedTokenSource(stopping))
            {
                handshakeTimeout.CancelAfter(TimeSpan.FromSeconds(10));
                await stream.ReadExactlyAsync(hello, handshakeTimeout.Token).ConfigureAwait(false);
            }
            if (BinaryPrimitives.ReadUInt32LittleEndian(hello) != TcpStoreProtocol.Magic
                || BinaryPrimitives.ReadUInt32LittleEndian(hello.AsSpan(4)) != TcpStoreProtocol.Version)
            {
                if (_logger.IsEnabled(LogLevel.Warning))
                {
                    StoreLog.BadHandshake(_logger, socket.RemoteEndPoint?.ToString() ?? "?");
                }
                return;
            }
            await stream.WriteAsync(hello, stopping).ConfigureAwait(false);
            while (true)
            {
                byte[]? body = await TcpStoreProtocol.ReadFrameAsync(stream, stopping).ConfigureAwait(false);
                if (body is null)
                {
                    return;
                }
                pending.RemoveAll(t => t.IsCompleted);
                pending.Add(HandleAsync(body, stream, writeGate, connectionClosed.Token));
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or InvalidDataException or EndOfStreamException or ObjectDisposedException)
        {
            // The client went away or sent garbage: drop the connection, keep the store.
        }
        finally
        {
            await connectionClosed.CancelAsync().ConfigureAwait(false);
            try
            {
                await Task.WhenAll(pending).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                // Handlers stop when the connection does.
            }
        }
    }

    private async Task HandleAsync(byte[] body, NetworkStream stream, SemaphoreSlim writeGate, CancellationToken cancellationToken)
    {
        uint id = BinaryPrimitives.ReadUInt32LittleEndian(body);
        ArrayBufferWriter<byte> response;
        try
        {
            response = await ExecuteAsync(id, body, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            response = TcpStoreProtocol.StartFrame(id, (byte)StoreStatus.Timeout);
            TcpStoreProtocol.WriteString(response, ex.Message);
        }
        catch (Exception ex) when (ex is InvalidOperationException or InvalidDataException or OverflowException or ArgumentException)
        {
            response = TcpStoreProtocol.StartFrame(id, (byte)StoreStatus.Error);
            TcpStoreProtocol.WriteString(response, ex.Message);
        }
        ReadOnlyMemory<byte> frame = TcpStoreProtocol.EndFrame(response);
        await writeGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await stream.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            writeGate.Release();
        }
    }

    private async Task<ArrayBufferWriter<byte>> ExecuteAsync(uint id, byte[] body, CancellationToken cancellationToken)
    {
        (StoreOp op, string key, byte[]? first, byte[]? second, long number, string[] keys) = Parse(body);
        ArrayBufferWriter<byte> response = TcpStoreProtocol.StartFrame(id, (byte)StoreStatus.Ok);
        switch (op)
        {
            case StoreOp.Set:
                await _store.SetAsync(key, first ?? [], cancellationToken).ConfigureAwait(false);
                break;
            case StoreOp.Get:
                byte[]? value = await _store.GetAsync(key, cancellationToken).ConfigureAwait(false);
                TcpStoreProtocol.WriteBytes(response, value, value is null);
                break;
            case StoreOp.Add:
                TcpStoreProtocol.WriteInt64(response, await _store.AddAsync(key, number, cancellationToken).ConfigureAwait(false));
                break;
            case StoreOp.CompareSet:
                TcpStoreProtocol.WriteBytes(response, await _store.CompareSetAsync(key, first, second ?? [], cancellationToken).ConfigureAwait(false));
                break;
            case StoreOp.Wait:
                await _store.WaitAsync(keys, TimeSpan.FromMilliseconds(Math.Max(0, number)), cancellationToken).ConfigureAwait(false);
                break;
            case StoreOp.Delete:
                bool deleted = await _store.DeleteAsync(key, cancellationToken).ConfigureAwait(false);
                response.GetSpan(1)[0] = deleted ? (byte)1 : (byte)0;
                response.Advance(1);
                break;
            case StoreOp.Ping:
                break;
            default:
                throw new InvalidDataException($"Unknown store operation {(byte)op}.");
        }
        return response;
    }

    private static (StoreOp Op, string Key, byte[]? First, byte[]? Second, long Number, string[] Keys) Parse(byte[] body)
    {
        var reader = new FrameReader(body);
        reader.ReadUInt32();
        var op = (StoreOp)reader.ReadByte();
        switch (op)
        {
            case StoreOp.Set:
                return (op, reader.ReadString(), reader.ReadBytes(), null, 0, []);
            case StoreOp.Get:
            case StoreOp.Delete:
                return (op, reader.ReadString(), null, null, 0, []);
            case StoreOp.Add:
                return (op, reader.ReadString(), null, null, reader.ReadInt64(), []);
            case StoreOp.CompareSet:
                return (op, reader.ReadString(), reader.ReadBytes(), reader.ReadBytes(), 0, []);
            case StoreOp.Wait:
                long count = reader.ReadInt64();
                if (count is < 0 or > 1 << 16)
                {
                    throw new InvalidDataException($"WAIT for {count} keys is out of range.");
                }
                string[] keys = new string[count];
                for (int i = 0; i < keys.Length; i++)
                {
                    keys[i] = reader.ReadString();
                }
                return (op, string.Empty, null, null, reader.ReadInt64(), keys);
            default:
                return (op, string.Empty, null, null, 0, []);
        }
    }
}
