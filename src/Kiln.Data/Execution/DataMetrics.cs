using System.Diagnostics.Metrics;

namespace Kiln.Data;

/// <summary>
/// Kiln.Data's metrics (System.Diagnostics.Metrics, meter <c>Kiln.Data</c>): per-node counters of every live
/// <see cref="DataLoader{T}"/>, observed from <see cref="NodeStats"/> when a listener asks, so the hot path
/// pays nothing for them. Tags: <c>kiln.data.node</c> (node id), <c>kiln.data.node_type</c>,
/// <c>kiln.data.worker</c>.
/// </summary>
public static class DataMetrics
{
    /// <summary>The meter name.</summary>
    public const string MeterName = "Kiln.Data";

    private static readonly Meter s_meter = new(MeterName, typeof(DataMetrics).Assembly.GetName().Version?.ToString());
    private static readonly Lock s_gate = new();
    private static readonly List<IReadOnlyList<Node>> s_loaders = [];

    static DataMetrics()
    {
        s_meter.CreateObservableCounter("kiln.data.node.items", () => Observe(s => s.Items), "{item}", "Items each node has yielded.");
        s_meter.CreateObservableCounter("kiln.data.node.bytes_read", () => Observe(s => s.Bytes), "By", "Bytes each source node has read from storage.");
        s_meter.CreateObservableCounter("kiln.data.node.skipped", () => Observe(s => s.Skipped), "{item}", "Inputs each node dropped under on_error: skip.");
        s_meter.CreateObservableCounter("kiln.data.node.time", () => ObserveTime(), "s", "Time inside each node's TryNext, its inputs' time included.");
    }

    internal static void Track(IReadOnlyList<Node> roots)
    {
        lock (s_gate)
        {
            s_loaders.Add(roots);
        }
    }

    internal static void Untrack(IReadOnlyList<Node> roots)
    {
        lock (s_gate)
        {
            s_loaders.Remove(roots);
        }
    }

    private static List<Measurement<long>> Observe(Func<NodeStats, long> value) =>
        [.. Nodes().Select(n => new Measurement<long>(value(n.Node.Stats), Tags(n.Node, n.Worker)))];

    private static List<Measurement<double>> ObserveTime() =>
        [.. Nodes().Select(n => new Measurement<double>(n.Node.Stats.Inclusive.TotalSeconds, Tags(n.Node, n.Worker)))];

    private static List<(Node Node, int Worker)> Nodes()
    {
        lock (s_gate)
        {
            return [.. s_loaders.SelectMany(roots => roots.SelectMany((root, worker) => GraphReport.Nodes(root).Select(node => (node, worker))))];
        }
    }

    private static KeyValuePair<string, object?>[] Tags(Node node, int worker) =>
    [
        new("kiln.data.node", node.Id),
        new("kiln.data.node_type", node.Type),
        new("kiln.data.worker", worker),
    ];
}
