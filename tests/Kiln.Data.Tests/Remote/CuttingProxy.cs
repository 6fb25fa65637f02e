using System.Net;
using System.Net.Sockets;

namespace Kiln.Data.Tests.Remote;

/// <summary>
/// A TCP relay on 127.0.0.1 in front of a real server: the first <c>cutConnections</c> connections get
/// only <c>cutAfter</c> bytes of the server's answer (headers included), then the relay ends them, as a
/// network that drops a long download midway.
/// </summary>
public sealed class CuttingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly int _upstreamPort;
    private readonly int _cutConnections;
    private readonly long _cutAfter;
    private readonly Task _accepting;
    private int _connections;

    public CuttingProxy(int upstreamPort, int cutConnections, long cutAfter)
    {
        _upstreamPort = upstreamPort;
        _cutConnections = cutConnections;
        _cutAfter = cutAfter;
        _listener.Start();
        Url = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _accepting = AcceptAsync();
    }

    public Uri Url { get; }

    public int Connections => Volatile.Read(ref _connections);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting.WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        var relays = new List<Task>();
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                TcpClient client = await _listener.AcceptTcpClientAsync(_stop.Token);
                int index = Interlocked.Increment(ref _connections);
                relays.Add(RelayAsync(client, index <= _cutConnections ? _cutAfter : long.MaxValue));
            }
        }
        catch (Exception error) when (error is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        await Task.WhenAll(relays).WaitAsync(TimeSpan.FromSeconds(10));
    }

    private async Task RelayAsync(TcpClient client, long downLimit)
    {
        using (client)
        using (var upstream = new TcpClient())
        {
            try
            {
                await upstream.ConnectAsync(IPAddress.Loopback, _upstreamPort, _stop.Token);
                NetworkStream near = client.GetStream();
                NetworkStream far = upstream.GetStream();
                Task up = PumpAsync(near, far, long.MaxValue);
                Task down = PumpAsync(far, near, downLimit);
                await Task.WhenAny(up, down);
                client.Client.Shutdown(SocketShutdown.Both);
                upstream.Client.Shutdown(SocketShutdown.Both);
            }
            catch (Exception error) when (error is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
            {
            }
        }
    }

    private async Task PumpAsync(NetworkStream from, NetworkStream to, long limit)
    {
        var buffer = new byte[16 * 1024];
        long sent = 0;
        try
        {
            while (sent < limit)
            {
                int read = await from.ReadAsync(buffer, _stop.Token);
                if (read == 0)
                {
                    return;
                }

                int forward = (int)Math.Min(read, limit - sent);
                await to.WriteAsync(buffer.AsMemory(0, forward), _stop.Token);
                sent += forward;
            }
        }
        catch (Exception error) when (error is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
        {
        }
    }
}
