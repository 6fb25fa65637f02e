using System.Diagnostics;
using System.Globalization;
using TorchSharp;

namespace Kiln.Distributed.Mpi;

/// <summary>
/// Records the collective a group is in (operation, sequence number, element count, dtype, start time) and, on one
/// background thread, calls <c>onTimeout</c> once with a description when it has run longer than the timeout. The
/// group makes one call at a time, so there is one writer; recording allocates nothing.
/// </summary>
internal sealed class CollectiveWatchdog : IDisposable
{
    private readonly TimeSpan _timeout;
    private readonly int _rank;
    private readonly int _worldSize;
    private readonly Action<string> _onTimeout;
    private readonly ManualResetEventSlim _stop = new();
    private readonly Thread? _thread;

    private string _operation = "";
    private long _sequence;
    private long _count;
    private torch.ScalarType _dtype;
    private int _peer;
    private long _started;

    public CollectiveWatchdog(TimeSpan timeout, int rank, int worldSize, Action<string> onTimeout)
    {
        _timeout = timeout;
        _rank = rank;
        _worldSize = worldSize;
        _onTimeout = onTimeout;
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            _thread = new Thread(Watch) { IsBackground = true, Name = "Kiln.Distributed collective watchdog" };
            _thread.Start();
        }
    }

    /// <summary>How often the thread looks: <see cref="PollInterval"/> of the timeout.</summary>
    public TimeSpan Interval => PollInterval(_timeout);

    /// <summary>How often a watchdog looks for a timeout: an eighth of it, between 10 ms and 1 s.</summary>
    public static TimeSpan PollInterval(TimeSpan timeout) =>
        TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 8, TimeSpan.TicksPerMillisecond * 10, TimeSpan.TicksPerSecond));

    /// <summary>Whether the watch thread runs (a finite timeout, not yet disposed).</summary>
    public bool IsWatching => _thread is { IsAlive: true };

    /// <summary>Marks the start of a call; <paramref name="count"/> is -1 without a tensor, <paramref name="peer"/> -1 without a peer.</summary>
    public void Begin(string operation, long count, torch.ScalarType dtype, int peer = -1)
    {
        _operation = operation;
        _count = count;
        _dtype = dtype;
        _peer = peer;
        _sequence++;
        Volatile.Write(ref _started, Stopwatch.GetTimestamp());
    }

    /// <summary>Marks the end of the call <see cref="Begin"/> started.</summary>
    public void End() => Volatile.Write(ref _started, 0);

    /// <summary>Stops and joins the watch thread.</summary>
    public void Dispose()
    {
        _stop.Set();
        if (_thread is not null && _thread != Thread.CurrentThread)
        {
            _thread.Join();
        }
        _stop.Dispose();
    }

    /// <summary>The line written when a call times out, e.g. <c>all_reduce #17 (rank 0 of 2, 1000 float32 elements) did not complete within 2 s: …</c>.</summary>
    public static string Describe(string operation, long sequence, int rank, int worldSize, long count, torch.ScalarType dtype, int peer, TimeSpan timeout)
    {
        var text = new System.Text.StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"{operation} #{sequence} (rank {rank} of {worldSize}");
        if (count >= 0)
        {
            text.Append(CultureInfo.InvariantCulture, $", {count} {DtypeName(dtype)} element{(count == 1 ? "" : "s")}");
        }
        if (peer >= 0)
        {
            text.Append(CultureInfo.InvariantCulture, $", {(operation == "send" ? "to" : "from")} rank {peer}");
        }
        text.Append(CultureInfo.InvariantCulture, $") did not complete within {FormatTimeout(timeout)}: ");
        text.Append("another rank died, hung or called a different collective; aborting the job");
        return text.ToString();
    }

    private void Watch()
    {
        TimeSpan interval = Interval;
        while (!_stop.Wait(interval))
        {
            long started = Volatile.Read(ref _started);
            if (started == 0 || Stopwatch.GetElapsedTime(started) <= _timeout)
            {
                continue;
            }
            string operation = _operation;
            long sequence = _sequence, count = _count;
            torch.ScalarType dtype = _dtype;
            int peer = _peer;
            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref _started) != started)
            {
                // That call ended (and maybe another began) while the fields were read.
                continue;
            }
            _onTimeout(Describe(operation, sequence, _rank, _worldSize, count, dtype, peer, _timeout));
            return;
        }
    }

    private static string DtypeName(torch.ScalarType dtype) => dtype switch
    {
        torch.ScalarType.Float32 => "float32",
        torch.ScalarType.Float64 => "float64",
        torch.ScalarType.Float16 => "float16",
        torch.ScalarType.BFloat16 => "bfloat16",
        torch.ScalarType.Int8 => "int8",
        torch.ScalarType.Byte => "uint8",
        torch.ScalarType.Int16 => "int16",
        torch.ScalarType.Int32 => "int32",
        torch.ScalarType.Int64 => "int64",
        _ => dtype.ToString().ToLowerInvariant(),
    };

    private static string FormatTimeout(TimeSpan timeout) =>
        timeout.Ticks % TimeSpan.TicksPerMinute == 0 && timeout >= TimeSpan.FromMinutes(2)
            ? string.Create(CultureInfo.InvariantCulture, $"{timeout.TotalMinutes:0} min")
            : string.Create(CultureInfo.InvariantCulture, $"{timeout.TotalSeconds:0.###} s");
}
