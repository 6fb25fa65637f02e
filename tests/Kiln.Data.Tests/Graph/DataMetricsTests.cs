using System.Diagnostics.Metrics;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

public sealed class DataMetricsTests
{
    [Fact]
    public void Items_AreObservedPerNode_ForLiveLoadersOnly()
    {
        DataGraph graph = Build("x10",
            Node("metrics-src", "range", parameters: new() { ["count"] = 7 }),
            Node("x10", "map", ["metrics-src"], new() { ["fn"] = "times10" }));
        var seen = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DataMetrics.MeterName && instrument.Name == "kiln.data.node.items")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string node = (string)tags.ToArray().Single(t => t.Key == "kiln.data.node").Value!;
            seen[node] = value;
        });
        listener.Start();

        using (var loader = new DataLoader<long>(graph))
        {
            loader.ReadToEnd().Count().ShouldBe(7);
            listener.RecordObservableInstruments();
        }
        seen["metrics-src"].ShouldBe(7);
        seen["x10"].ShouldBe(7);

        seen.Clear();
        listener.RecordObservableInstruments();
        seen.ShouldNotContainKey("metrics-src");
    }
}
