using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kiln.Data.Nodes;

/// <summary>
/// Streaming readers: each turns one location (a local path, or a URL a registered opener serves) into a
/// sequence of items, reading forward only — archives are never extracted to disk. They run inside a
/// flat-map node, whose checkpoint is the position in the current location.
/// </summary>
internal static class Readers
{
    /// <summary>Opens a location for reading: a local path, an http(s) URL or an s3:// object.</summary>
    public static Stream Open(string location, ReadContext node)
    {
        Stream stream = node.Storage.Open(location);
        return new CountingStream(stream, node.Node.Stats);
    }

    public static IEnumerable<string> Lines(string location, ReadContext node)
    {
        using var reader = new StreamReader(Open(location, node), Encoding.UTF8);
        while (reader.ReadLine() is { } line)
        {
            yield return line;
        }
    }

    public static IEnumerable<JsonNode> JsonLines(string location, ReadContext node)
    {
        int number = 0;
        foreach (string line in Lines(location, node))
        {
            number++;
            if (line.Length == 0)
            {
                continue;
            }
            JsonNode? parsed;
            try
            {
                parsed = JsonNode.Parse(line);
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"line {number}: not JSON ({ex.Message})", ex);
            }
            yield return parsed ?? throw new InvalidDataException($"line {number}: null");
        }
    }

    /// <summary>CSV (RFC 4180: quotes, doubled quotes, commas and newlines inside quotes); the first row names the columns.</summary>
    public static IEnumerable<IReadOnlyDictionary<string, string>> Csv(string location, ReadContext node, char separator)
    {
        using var reader = new StreamReader(Open(location, node), Encoding.UTF8);
        string[]? header = null;
        int row = 0;
        while (ReadRecord(reader, separator) is { } fields)
        {
            row++;
            if (header is null)
            {
                header = fields;
                continue;
            }
            if (fields.Length != header.Length)
            {
                throw new InvalidDataException($"row {row}: {fields.Length} fields, the header has {header.Length}");
            }
            var record = new Dictionary<string, string>(header.Length, StringComparer.Ordinal);
            for (int i = 0; i < header.Length; i++)
            {
                record[header[i]] = fields[i];
            }
            yield return record;
        }
    }

    private static string[]? ReadRecord(StreamReader reader, char separator)
    {
        if (reader.Peek() < 0)
        {
            return null;
        }
        var fields = new List<string>();
        var field = new StringBuilder();
        bool quoted = false;
        while (true)
        {
            int c = reader.Read();
            if (c < 0)
            {
                if (quoted)
                {
                    throw new InvalidDataException("end of file inside a quoted field");
                }
                break;
            }
            if (quoted)
            {
                if (c == '"')
                {
                    if (reader.Peek() == '"')
                    {
                        reader.Read();
                        field.Append('"');
                    }
                    else
                    {
                        quoted = false;
                    }
                }
                else
                {
                    field.Append((char)c);
                }
            }
            else if (c == '"' && field.Length == 0)
            {
                quoted = true;
            }
            else if (c == separator)
            {
                fields.Add(field.ToString());
                field.Clear();
            }
            else if (c == '\n')
            {
                break;
            }
            else if (c != '\r')
            {
                field.Append((char)c);
            }
        }
        fields.Add(field.ToString());
        return [.. fields];
    }

    /// <summary>Tar members (plain, or gzip-compressed: detected by its magic bytes), in archive order.</summary>
    public static IEnumerable<Blob> Tar(string location, ReadContext node)
    {
        using var raw = (CountingStream)Open(location, node);
        var buffered = new BufferedStream(raw, 1 << 16);
        byte[] magic = new byte[2];
        int got = buffered.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
        Stream peeked = new PrefixedStream(magic.AsMemory(0, got), buffered);
        Stream stream = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b ? new GZipStream(peeked, CompressionMode.Decompress) : peeked;
        using var reader = new TarReader(stream);
        while (true)
        {
            TarEntry? entry;
            byte[] data;
            try
            {
                entry = reader.GetNextEntry();
                if (entry is null)
                {
                    break;
                }
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile))
                {
                    continue;
                }
                data = new byte[entry.Length];
                entry.DataStream?.ReadExactly(data);
            }
            catch (Exception ex) when (ex is EndOfStreamException or InvalidDataException or FormatException)
            {
                throw new InvalidDataException($"truncated or corrupt tar after {raw.BytesRead} bytes: {ex.Message}", ex);
            }
            yield return new Blob(entry.Name, data, location);
        }
        stream.Dispose();
    }

    /// <summary>Zip members, in central-directory order.</summary>
    public static IEnumerable<Blob> Zip(string location, ReadContext node)
    {
        using Stream raw = Open(location, node);
        Stream seekable = raw.CanSeek ? raw : CopyToMemory(raw);
        using var archive = new ZipArchive(seekable, ZipArchiveMode.Read);
        foreach (ZipArchiveEntry entry in archive.Entries)
        {
            if (entry.FullName.EndsWith('/'))
            {
                continue;
            }
            using Stream data = entry.Open();
            using var memory = new MemoryStream((int)entry.Length);
            data.CopyTo(memory);
            yield return new Blob(entry.FullName, memory.ToArray(), location);
        }
    }

    /// <summary>A gzip file, decompressed: one item named without ".gz".</summary>
    public static IEnumerable<Blob> Gzip(string location, ReadContext node)
    {
        using Stream raw = Open(location, node);
        using var gzip = new GZipStream(raw, CompressionMode.Decompress);
        using var memory = new MemoryStream();
        gzip.CopyTo(memory);
        string name = Path.GetFileName(location);
        yield return new Blob(name.EndsWith(".gz", StringComparison.Ordinal) ? name[..^3] : name, memory.ToArray(), location);
    }

    /// <summary>A location's bytes, whole.</summary>
    public static IEnumerable<Blob> Whole(string location, ReadContext node)
    {
        using Stream raw = Open(location, node);
        using var memory = new MemoryStream();
        raw.CopyTo(memory);
        yield return new Blob(location, memory.ToArray(), location);
    }

    /// <summary>
    /// WebDataset: consecutive tar members sharing a key (the path up to the first dot of the file name) form one
    /// sample, keyed by the rest of the name ("jpg", "cls", "seg.png").
    /// </summary>
    public static IEnumerable<Sample> WebDataset(string location, ReadContext node)
    {
        string? key = null;
        Dictionary<string, byte[]> fields = [];
        foreach (Blob blob in Tar(location, node))
        {
            string directory = blob.Name.LastIndexOf('/') is int slash and >= 0 ? blob.Name[..(slash + 1)] : "";
            string file = blob.Name[directory.Length..];
            int dot = file.IndexOf('.', StringComparison.Ordinal);
            if (dot <= 0)
            {
                continue;
            }
            string sampleKey = directory + file[..dot];
            if (key is not null && sampleKey != key)
            {
                yield return new Sample(key, fields, location);
                fields = [];
            }
            key = sampleKey;
            if (!fields.TryAdd(file[(dot + 1)..], blob.Data))
            {
                throw new InvalidDataException($"sample {key} has two members with extension {file[(dot + 1)..]}");
            }
        }
        if (key is not null)
        {
            yield return new Sample(key, fields, location);
        }
    }

    /// <summary>Bytes already read to sniff the format, then the rest of the stream: sniffing works on streams that cannot seek.</summary>
    private sealed class PrefixedStream(ReadOnlyMemory<byte> prefix, Stream rest) : Stream
    {
        private ReadOnlyMemory<byte> _prefix = prefix;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush()
        {
        }
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer)
        {
            if (_prefix.IsEmpty)
            {
                return rest.Read(buffer);
            }
            int n = Math.Min(buffer.Length, _prefix.Length);
            _prefix.Span[..n].CopyTo(buffer);
            _prefix = _prefix[n..];
            return n;
        }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                rest.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    private static MemoryStream CopyToMemory(Stream stream)
    {
        var memory = new MemoryStream();
        stream.CopyTo(memory);
        memory.Position = 0;
        return memory;
    }

    private sealed class CountingStream(Stream inner, NodeStats stats) : Stream
    {
        public long BytesRead { get; private set; }

        public override bool CanRead => true;
        public override bool CanSeek => inner.CanSeek;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer)
        {
            int n = inner.Read(buffer);
            stats.AddBytes(n);
            BytesRead += n;
            return n;
        }
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}

/// <summary>What a reader needs: its node (for counters) and the storage it reads from.</summary>
internal sealed record ReadContext(Node Node, StorageAccess Storage);
