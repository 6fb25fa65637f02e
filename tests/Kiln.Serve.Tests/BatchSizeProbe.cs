using System.Diagnostics.Metrics;

namespace Kiln.Serve.Tests;

/// <summary>Listens to the server's <c>kiln.serve.batch_size</c> histogram and keeps the largest batch seen (optionally of one model).</summary>
internal sealed class BatchSizeProbe : IDisposable
{
    private readonly MeterListener _listener = new();
    private int _largest;

    public BatchSizeProbe(string? modelName = null)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == "Kiln.Serve" && instrument.Name == "kiln.serve.batch_size")
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<int>((_, value, tags, _) =>
        {
            if (modelName is not null && !HasModel(tags, modelName))
            {
                return;
            }
            int current;
            while (value > (current = Volatile.Read(ref _largest)) && Interlocked.CompareExchange(ref _largest, value, current) != current)
            {
            }
        });
        _listener.Start();
    }

    /// <summary>The largest batch measured so far.</summary>
    public int Largest => Volatile.Read(ref _largest);

    private static bool HasModel(ReadOnlySpan<KeyValuePair<string, object?>> tags, string modelName)
    {
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            if (tag.Key == "model_name" && Equals(tag.Value, modelName))
            {
                return true;
            }
        }
        return false;
    }

    public void Dispose() => _listener.Dispose();
}
