using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Kiln.Distributed.Nccl;

/// <summary>
/// Hands NCCL's unique id from rank 0 to the other ranks over TCP at MASTER_ADDR:MASTER_PORT, the address torchrun and
/// <c>kiln agent</c> give every worker. Rank 0 listens; every other rank connects (retrying until the rank-0 listener
/// is up), says who it is, and reads the 128 bytes.
/// </summary>
internal static class NcclIdExchange
{
    private const int Magic = 0x4B4E4331; // "KNC1"

    /// <summary>Rank 0: serves <paramref name="id"/> to ranks 1..worldSize-1, each exactly once.</summary>
    public static void Serve(byte[] id, int port, int worldSize, TimeSpan timeout)
    {
        var listener = new TcpListener(IPAddress.IPv6Any, port);
        listener.Server.DualMode = true;
        listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        try
        {
            listener.Start(worldSize);
        }
        catch (SocketException ex)
        {
            throw new DistributedException($"rank 0 cannot listen on MASTER_PORT {port} to hand out NCCL's unique id: {ex.Message}", ex);
        }
        using (listener.Server)
        {
            var served = new bool[worldSize];
            int remaining = worldSize - 1;
            long deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
            var request = new byte[12];
            while (remaining > 0)
            {
                int left = (int)Math.Max(0, (deadline - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency);
                if (left == 0 || !listener.Server.Poll(Math.Min(left, 1000) * 1000, SelectMode.SelectRead))
                {
                    if (Stopwatch.GetTimestamp() >= deadline)
                    {
                        int[] missing = [.. Enumerable.Range(1, worldSize - 1).Where(r => !served[r])];
                        throw new DistributedException(
                            $"rank 0 waited {timeout.TotalSeconds:0.#} s on port {port} for rank(s) {string.Join(", ", missing)} of {worldSize} to fetch NCCL's unique id; they never connected (not started, or a different MASTER_ADDR/MASTER_PORT)");
                    }
                    continue;
                }
                using Socket client = listener.AcceptSocket();
                client.ReceiveTimeout = 10_000;
                client.SendTimeout = 10_000;
                ReceiveExactly(client, request);
                int magic = BinaryPrimitives.ReadInt32LittleEndian(request);
                int rank = BinaryPrimitives.ReadInt32LittleEndian(request.AsSpan(4));
                int theirWorld = BinaryPrimitives.ReadInt32LittleEndian(request.AsSpan(8));
                if (magic != Magic)
                {
                    continue; // not a Kiln rank; ignore the stray connection
                }
                if (theirWorld != worldSize)
                {
                    throw new DistributedException($"rank {rank} says WORLD_SIZE={theirWorld}, rank 0 has WORLD_SIZE={worldSize}; every rank must get the same launcher environment");
                }
                if (rank <= 0 || rank >= worldSize || served[rank])
                {
                    throw new DistributedException($"two processes claim RANK={rank} (or it is out of range for WORLD_SIZE={worldSize}); ranks must be unique");
                }
                var reply = new byte[4 + NcclApi.UniqueIdBytes];
                BinaryPrimitives.WriteInt32LittleEndian(reply, Magic);
                id.CopyTo(reply, 4);
                client.Send(reply);
                served[rank] = true;
                remaining--;
            }
        }
    }

    /// <summary>Ranks other than 0: fetches the id from rank 0, retrying the connection until <paramref name="timeout"/>.</summary>
    public static byte[] Fetch(string host, int port, int rank, int worldSize, TimeSpan timeout)
    {
        var stopwatch = Stopwatch.StartNew();
        Exception? last = null;
        while (stopwatch.Elapsed < timeout)
        {
            try
            {
                using var client = new TcpClient();
                client.ReceiveTimeout = 30_000;
                client.SendTimeout = 10_000;
                client.Connect(host, port);
                var request = new byte[12];
                BinaryPrimitives.WriteInt32LittleEndian(request, Magic);
                BinaryPrimitives.WriteInt32LittleEndian(request.AsSpan(4), rank);
                BinaryPrimitives.WriteInt32LittleEndian(request.AsSpan(8), worldSize);
                client.Client.Send(request);
                var reply = new byte[4 + NcclApi.UniqueIdBytes];
                ReceiveExactly(client.Client, reply);
                if (BinaryPrimitives.ReadInt32LittleEndian(reply) != Magic)
                {
                    throw new DistributedException($"{host}:{port} answered, but not as Kiln's rank 0 (MASTER_PORT taken by another program?)");
                }
                return reply[4..];
            }
            catch (SocketException ex)
            {
                last = ex;
                Thread.Sleep(100);
            }
        }
        throw new DistributedException($"rank {rank} could not fetch NCCL's unique id from rank 0 at {host}:{port} within {timeout.TotalSeconds:0.#} s: {last?.Message}", last!);
    }

    private static void ReceiveExactly(Socket socket, byte[] buffer)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int n = socket.Receive(buffer, read, buffer.Length - read, SocketFlags.None);
            if (n == 0)
            {
                throw new SocketException((int)SocketError.ConnectionReset);
            }
            read += n;
        }
    }
}
