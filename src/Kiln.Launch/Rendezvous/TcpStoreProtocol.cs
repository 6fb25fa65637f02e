using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// The wire format of Kiln's embedded store (<see cref="TcpStoreServer"/>, <see cref="TcpStoreClient"/>). It is Kiln's
/// own and is <b>not</b> wire-compatible with torch's c10d TCPStore (docs/launch-agent.md).
/// </summary>
/// <remarks>
/// <para>Handshake: the client sends <see cref="Magic"/> and <see cref="Version"/> (two little-endian uint32); the server
/// answers the same eight bytes, or closes the connection.</para>
/// <para>Frames, both ways: uint32 length of what follows, uint32 request id, one byte (the <see cref="StoreOp"/> of a
/// request, the <see cref="StoreStatus"/> of a response), then the fields. Byte strings are an int32 length (−1: null)
/// and the bytes; keys are UTF-8 byte strings; integers are little-endian int64. Requests on one connection may be
/// outstanding at the same time (a WAIT does not hold up a GET); responses carry the id of their request.</para>
/// </remarks>
internal static class TcpStoreProtocol
{
    /// <summary>"KLNS" read as a little-endian uint32.</summary>
    public const uint Magic = 0x534E4C4B;

    /// <summary>The protocol version; bumped on any incompatible change.</summary>
    public const uint Version = 1;

    /// <summary>The largest frame either side accepts.</summary>
    public const int MaxFrameLength = 64 << 20;

    public static void WriteBytes(ArrayBufferWriter<byte> writer, ReadOnlySpan<byte> value, bool isNull = false)
    {
        BinaryPrimitives.WriteInt32LittleEndian(writer.GetSpan(4), isNull ? -1 : value.Length);
        writer.Advance(4);
        if (!isNull)
        {
            writer.Write(value);
        }
    }

    public static void WriteString(ArrayBufferWriter<byte> writer, string value) => WriteBytes(writer, Encoding.UTF8.GetBytes(value));

    public static void WriteInt64(ArrayBufferWriter<byte> writer, long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(writer.GetSpan(8), value);
        writer.Advance(8);
    }

    /// <summary>Starts a frame: room for the length, then the id and the op/status byte.</summary>
    public static ArrayBufferWriter<byte> StartFrame(uint id, byte kind)
    {
        var writer = new ArrayBufferWriter<byte>(64);
        writer.Advance(4);
        BinaryPrimitives.WriteUInt32LittleEndian(writer.GetSpan(4), id);
        writer.Advance(4);
        writer.GetSpan(1)[0] = kind;
        writer.Advance(1);
        return writer;
    }

    /// <summary>Fills in the length of a frame started with <see cref="StartFrame"/>.</summary>
    public static ReadOnlyMemory<byte> EndFrame(ArrayBufferWriter<byte> writer)
    {
        byte[] frame = writer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(frame, (uint)(frame.Length - 4));
        return frame;
    }

    /// <summary>Reads one frame's body (id, kind, fields), or null at the end of the stream.</summary>
    public static async Task<byte[]?> ReadFrameAsync(Stream stream, CancellationToken cancellationToken)
    {
        byte[] header = new byte[4];
        if (!await ReadExactlyOrEndAsync(stream, header, cancellationToken).ConfigureAwait(false))
        {
            return null;
        }
        uint length = BinaryPrimitives.ReadUInt32LittleEndian(header);
        if (length is < 5 or > MaxFrameLength)
        {
            throw new InvalidDataException($"Store frame of {length} bytes is out of range.");
        }
        byte[] body = new byte[length];
        await stream.ReadExactlyAsync(body, cancellationToken).ConfigureAwait(false);
        return body;
    }

    private static async Task<bool> ReadExactlyOrEndAsync(Stream stream, byte[] buffer, CancellationToken cancellationToken)
    {
        int read = 0;
        while (read < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(read), cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                return read == 0 ? false : throw new EndOfStreamException("The store connection closed mid-frame.");
            }
            read += n;
        }
        return true;
    }
}

/// <summary>A request's operation.</summary>
internal enum StoreOp : byte
{
    Set = 1,
    Get = 2,
    Add = 3,
    CompareSet = 4,
    Wait = 5,
    Delete = 6,
    Ping = 7,
}

/// <summary>A response's status.</summary>
internal enum StoreStatus : byte
{
    Ok = 0,
    Timeout = 1,
    Error = 2,
}

/// <summary>Reads the fields of a frame body in order.</summary>
internal ref struct FrameReader
{
    private readonly ReadOnlySpan<byte> _body;
    private int _position;

    public FrameReader(ReadOnlySpan<byte> body)
    {
        _body = body;
        _position = 0;
    }

    public uint ReadUInt32()
    {
        uint value = BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        return value;
    }

    public byte ReadByte() => Take(1)[0];

    public long ReadInt64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));

    public byte[]? ReadBytes()
    {
        int length = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
        return length switch
        {
            -1 => null,
            < 0 => throw new InvalidDataException($"Store field length {length} is negative."),
            _ => Take(length).ToArray(),
        };
    }

    public string ReadString() => Encoding.UTF8.GetString(ReadBytes() ?? throw new InvalidDataException("A store key is null."));

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count > _body.Length - _position)
        {
            throw new InvalidDataException("A store frame ends before its fields.");
        }
        ReadOnlySpan<byte> slice = _body.Slice(_position, count);
        _position += count;
        return slice;
    }
}
