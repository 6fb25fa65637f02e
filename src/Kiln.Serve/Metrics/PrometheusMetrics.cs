using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Kiln.Serve.Metrics;

/// <summary>
/// Listens to one <see cref="ServeMetrics"/> meter and renders Prometheus text exposition (format 0.0.4): TorchServe's
/// counters <c>ts_inference_requests_total</c>, <c>ts_inference_latency_microseconds</c> and
/// <c>ts_queue_latency_microseconds</c> (labels uuid, model_name, model_version), plus latency histograms in
/// milliseconds per model version for queue time, inference time and end-to-end request duration.
/// </summary>
internal sealed class PrometheusMetrics : IDisposable
{
    /// <summary>Histogram upper bounds in milliseconds (+Inf is implicit).</summary>
    private static readonly double[] s_bounds = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000];

    private readonly Meter _meter;
    private readonly MeterListener _listener;
    private readonly string _uuid;
    private readonly Lock _gate = new();
    private readonly SortedDictionary<(string Model, string Version), Series> _series = new();

    public PrometheusMetrics(Meter meter, string uuid)
    {
        _meter = meter;
        _uuid = uuid;
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (ReferenceEquals(instrument.Meter, _meter))
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        _listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.Start();
    }

    private void Record(string instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        string model = "", version = "";
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            if (tag.Key == "model_name")
            {
                model = tag.Value as string ?? "";
            }
            else if (tag.Key == "model_version")
            {
                version = tag.Value as string ?? "";
            }
        }
        lock (_gate)
        {
            if (!_series.TryGetValue((model, version), out Series? series))
            {
                series = new Series();
                _series.Add((model, version), series);
            }
            switch (instrument)
            {
                case "kiln.serve.requests":
                    series.Requests += (long)value;
                    break;
                case "kiln.serve.queue_time":
                    series.QueueTime.Add(value);
                    break;
                case "kiln.serve.inference_time":
                    series.InferenceTime.Add(value);
                    break;
                case "kiln.serve.request_duration":
                    series.Latency.Add(value);
                    break;
                default:
                    break;
            }
        }
    }

    /// <summary>Renders every series as Prometheus text exposition.</summary>
    public string Render()
    {
        var text = new StringBuilder();
        lock (_gate)
        {
            Counter(text, "ts_inference_requests_total", "Total number of inference requests.", s => s.Requests.ToString(CultureInfo.InvariantCulture));
            Counter(text, "ts_inference_latency_microseconds", "Cumulative inference duration in microseconds",
                s => Number(s.InferenceTime.Sum * 1000));
            Counter(text, "ts_queue_latency_microseconds", "Cumulative queue duration in microseconds", s => Number(s.QueueTime.Sum * 1000));
            Histogram(text, "kiln_queue_time_milliseconds", "Time a request waited in its model's queue.", s => s.QueueTime);
            Histogram(text, "kiln_inference_time_milliseconds", "Time a worker spent on the batch that held a request.", s => s.InferenceTime);
            Histogram(text, "kiln_request_duration_milliseconds", "End-to-end time of a prediction request, body read to response.", s => s.Latency);
        }
        return text.ToString();
    }

    private void Counter(StringBuilder text, string name, string help, Func<Series, string> value)
    {
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        text.Append("# TYPE ").Append(name).Append(" counter\n");
        foreach (((string model, string version), Series series) in _series)
        {
            text.Append(name).Append("{uuid=\"").Append(Escape(_uuid)).Append("\",model_name=\"").Append(Escape(model))
                .Append("\",model_version=\"").Append(Escape(version)).Append("\"} ").Append(value(series)).Append('\n');
        }
    }

    private void Histogram(StringBuilder text, string name, string help, Func<Series, Buckets> pick)
    {
        text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        text.Append("# TYPE ").Append(name).Append(" histogram\n");
        foreach (((string model, string version), Series series) in _series)
        {
            Buckets buckets = pick(series);
            string labels = $"model_name=\"{Escape(model)}\",model_version=\"{Escape(version)}\"";
            long cumulative = 0;
            for (int i = 0; i < s_bounds.Length; i++)
            {
                cumulative += buckets.Counts[i];
                text.Append(name).Append("_bucket{").Append(labels).Append(",le=\"").Append(Number(s_bounds[i])).Append("\"} ")
                    .Append(cumulative.ToString(CultureInfo.InvariantCulture)).Append('\n');
            }
            text.Append(name).Append("_bucket{").Append(labels).Append(",le=\"+Inf\"} ").Append(buckets.Count.ToString(CultureInfo.InvariantCulture)).Append('\n');
            text.Append(name).Append("_sum{").Append(labels).Append("} ").Append(Number(buckets.Sum)).Append('\n');
            text.Append(name).Append("_count{").Append(labels).Append("} ").Append(buckets.Count.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
    }

    private static string Number(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    public void Dispose() => _listener.Dispose();

    private sealed class Series
    {
        public long Requests;
        public readonly Buckets QueueTime = new();
        public readonly Buckets InferenceTime = new();
        public readonly Buckets Latency = new();
    }

    private sealed class Buckets
    {
        public readonly long[] Counts = new long[s_bounds.Length];
        public long Count;
        public double Sum;

        public void Add(double value)
        {
            int i = Array.BinarySearch(s_bounds, value);
            i = i >= 0 ? i : ~i;
            if (i < Counts.Length)
            {
                Counts[i]++;
            }
            Count++;
            Sum += value;
        }
    }
}
