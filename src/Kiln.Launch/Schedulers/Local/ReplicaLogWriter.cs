using System.Buffers;
using System.Text;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>
/// Records one replica's output as it arrives: the raw bytes in <c>stdout.log</c> and <c>stderr.log</c>, and every line
/// with its arrival time and stream in <c>combined.jsonl</c> (the time cursor behind <c>kiln log --since/--until</c>).
/// Files are appended to, so a restarted replica continues them. Thread-safe: both pumps write through one lock.
/// </summary>
internal sealed class ReplicaLogWriter : IDisposable
{
    /// <summary>A line longer than this is cut into pieces of this size.</summary>
    private const int MaxLineBytes = 64 * 1024;

    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly FileStream _stdout;
    private readonly FileStream _stderr;
    private readonly FileStream _combined;
    private readonly ArrayBufferWriter<byte> _stdoutLine = new();
    private readonly ArrayBufferWriter<byte> _stderrLine = new();
    private readonly ArrayBufferWriter<byte> _json = new(256);
    private bool _disposed;

    public ReplicaLogWriter(string directory, TimeProvider time)
    {
        Directory.CreateDirectory(directory);
        _time = time;
        _stdout = Open(LocalAppFiles.StdoutPath(directory));
        _stderr = Open(LocalAppFiles.StderrPath(directory));
        _combined = Open(LocalAppFiles.CombinedPath(directory));
    }

    /// <summary>Records a chunk of a stream's bytes.</summary>
    public void Write(bool isStderr, ReadOnlySpan<byte> chunk)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            FileStream raw = isStderr ? _stderr : _stdout;
            raw.Write(chunk);
            raw.Flush();
            ArrayBufferWriter<byte> pending = isStderr ? _stderrLine : _stdoutLine;
            DateTimeOffset now = _time.GetUtcNow();
            while (!chunk.IsEmpty)
            {
                int newline = chunk.IndexOf((byte)'\n');
                ReadOnlySpan<byte> piece = newline < 0 ? chunk : chunk[..newline];
                int room = MaxLineBytes - pending.WrittenCount;
                if (piece.Length > room)
                {
                    pending.Write(piece[..room]);
                    EmitLine(isStderr, pending, now);
                    chunk = chunk[room..];
                    continue;
                }
                pending.Write(piece);
                if (newline < 0)
                {
                    break;
                }
                EmitLine(isStderr, pending, now);
                chunk = chunk[(newline + 1)..];
            }
            _combined.Flush();
        }
    }

    /// <summary>Records a line the launcher itself has to say on a stream (e.g. why a replica could not start).</summary>
    public void WriteLine(bool isStderr, string line) => Write(isStderr, Encoding.UTF8.GetBytes(line + "\n"));

    /// <summary>A stream ended: its unfinished last line becomes a line.</summary>
    public void Complete(bool isStderr)
    {
        lock (_lock)
        {
            ArrayBufferWriter<byte> pending = isStderr ? _stderrLine : _stdoutLine;
            if (!_disposed && pending.WrittenCount > 0)
            {
                EmitLine(isStderr, pending, _time.GetUtcNow());
                _combined.Flush();
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _stdout.Dispose();
            _stderr.Dispose();
            _combined.Dispose();
        }
    }

    private void EmitLine(bool isStderr, ArrayBufferWriter<byte> pending, DateTimeOffset time)
    {
        ReadOnlySpan<byte> bytes = pending.WrittenSpan;
        if (bytes.Length > 0 && bytes[^1] == (byte)'\r')
        {
            bytes = bytes[..^1];
        }
        _json.ResetWrittenCount();
        LocalJson.WriteLogLine(_json, time, isStderr ? "stderr" : "stdout", Encoding.UTF8.GetString(bytes));
        _json.Write("\n"u8);
        _combined.Write(_json.WrittenSpan);
        pending.ResetWrittenCount();
    }

    private static FileStream Open(string path) => new(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
}
