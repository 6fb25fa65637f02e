using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Kiln.Serve;

/// <summary>
/// Kiln.Serve's instruments (meter <c>Kiln.Serve</c>): histograms of queue time, inference time and end-to-end
/// latency in milliseconds, a request counter and a batch-size histogram, each tagged with model_name and model_version.
/// </summary>
internal sealed class ServeMetrics : IDisposable
{
    public const string MeterName = "Kiln.Serve";

    private readonly Meter _meter;
    private readonly Histogram<double> _queueTime;
    private readonly Histogram<double> _inferenceTime;
    private readonly Histogram<double> _latency;
    private readonly Histogram<int> _batchSize;
    private readonly Counter<long> _requests;

    public ServeMetrics()
    {
        _meter = new Meter(MeterName);
        _queueTime = _meter.CreateHistogram<double>("kiln.serve.queue_time", "ms", "Time a request waited in its model's queue.");
        _inferenceTime = _meter.CreateHistogram<double>("kiln.serve.inference_time", "ms", "Time a worker spent on the batch that held a request.");
        _latency = _meter.CreateHistogram<double>("kiln.serve.request_duration", "ms", "End-to-end time of a prediction request, body read to response.");
        _batchSize = _meter.CreateHistogram<int>("kiln.serve.batch_size", "{request}", "Requests per batch a worker ran.");
        _requests = _meter.CreateCounter<long>("kiln.serve.requests", "{request}", "Prediction requests by status code.");
    }

    /// <summary>The meter the instruments belong to; one per server, so listeners can tell servers apart.</summary>
    public Meter Meter => _meter;

    public void QueueTime(string model, string version, long enqueuedAt, long dequeuedAt) =>
        _queueTime.Record(Stopwatch.GetElapsedTime(enqueuedAt, dequeuedAt).TotalMilliseconds, Tags(model, version));

    public void Batch(string model, string version, int size, TimeSpan elapsed)
    {
        TagList tags = Tags(model, version);
        _batchSize.Record(size, tags);
        for (int i = 0; i < size; i++)
        {
            _inferenceTime.Record(elapsed.TotalMilliseconds, tags);
        }
    }

    public void Request(string model, string version, int status, long startedAt)
    {
        TagList tags = Tags(model, version);
        _latency.Record(Stopwatch.GetElapsedTime(startedAt).TotalMilliseconds, tags);
        tags.Add("status_code", status);
        _requests.Add(1, tags);
    }

    private static TagList Tags(string model, string version) => new() { { "model_name", model }, { "model_version", version } };

    public void Dispose() => _meter.Dispose();
}
