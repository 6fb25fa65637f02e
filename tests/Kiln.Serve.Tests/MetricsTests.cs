using System.Globalization;
using System.Text.RegularExpressions;

namespace Kiln.Serve.Tests;

public sealed partial class MetricsTests
{
    [GeneratedRegex("""^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? ([^ ]+)$""")]
    private static partial Regex SampleLine();

    [Fact]
    public async Task CountersAndHistogramsCountEveryPrediction()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        const int n = 5;
        for (int i = 0; i < n; i++)
        {
            await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", [1, 2, 3, i]);
        }
        using var client = new HttpClient { BaseAddress = harness.Server.MetricsAddress, Timeout = TimeSpan.FromSeconds(30) };
        Dictionary<string, double> samples = [];
        // The request counter is recorded just after the response is written: poll briefly.
        for (int attempt = 0; attempt < 100; attempt++)
        {
            using HttpResponseMessage response = await client.GetAsync("metrics");
            response.StatusCode.ShouldBe(System.Net.HttpStatusCode.OK);
            response.Content.Headers.ContentType!.MediaType.ShouldBe("text/plain");
            samples = Parse(await response.Content.ReadAsStringAsync());
            if (samples.GetValueOrDefault("kiln_request_duration_milliseconds_count{model_name=\"lin\",model_version=\"1.0\"}") >= n)
            {
                break;
            }
            await Task.Delay(20);
        }
        samples.Keys.Single(k => k.StartsWith("ts_inference_requests_total{", StringComparison.Ordinal)).ShouldMatch("uuid=\"[0-9a-f-]{36}\",model_name=\"lin\",model_version=\"1.0\"");
        samples.Single(kv => kv.Key.StartsWith("ts_inference_requests_total{", StringComparison.Ordinal)).Value.ShouldBe(n);
        samples.Single(kv => kv.Key.StartsWith("ts_inference_latency_microseconds{", StringComparison.Ordinal)).Value.ShouldBeGreaterThan(0);
        samples.Single(kv => kv.Key.StartsWith("ts_queue_latency_microseconds{", StringComparison.Ordinal)).Value.ShouldBeGreaterThanOrEqualTo(0);
        foreach (string histogram in new[] { "kiln_queue_time_milliseconds", "kiln_inference_time_milliseconds", "kiln_request_duration_milliseconds" })
        {
            string labels = "model_name=\"lin\",model_version=\"1.0\"";
            samples[$"{histogram}_count{{{labels}}}"].ShouldBe(n, histogram);
            samples[$"{histogram}_bucket{{{labels},le=\"+Inf\"}}"].ShouldBe(n, histogram);
            samples[$"{histogram}_sum{{{labels}}}"].ShouldBeGreaterThanOrEqualTo(0);
            double[] buckets = [.. samples.Where(kv => kv.Key.StartsWith(histogram + "_bucket{", StringComparison.Ordinal)).Select(kv => kv.Value)];
            buckets.Length.ShouldBeGreaterThan(2);
            buckets.ShouldBe([.. buckets.Order()], "buckets are cumulative");
        }
    }

    [Fact]
    public async Task EmptyServerServesHeadersOnly()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using var client = new HttpClient { BaseAddress = harness.Server.MetricsAddress, Timeout = TimeSpan.FromSeconds(30) };
        Dictionary<string, double> samples = Parse(await client.GetStringAsync("metrics"));
        samples.ShouldBeEmpty();
        using HttpResponseMessage missing = await client.GetAsync("nope");
        missing.StatusCode.ShouldBe(System.Net.HttpStatusCode.NotFound);
    }

    /// <summary>Parses Prometheus text exposition strictly: HELP and TYPE once per family before its samples, no duplicate series.</summary>
    private static Dictionary<string, double> Parse(string text)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        var typed = new Dictionary<string, string>(StringComparer.Ordinal);
        var helped = new HashSet<string>(StringComparer.Ordinal);
        text.ShouldEndWith("\n");
        foreach (string line in text.TrimEnd('\n').Split('\n'))
        {
            if (line.StartsWith("# HELP ", StringComparison.Ordinal))
            {
                helped.Add(line.Split(' ')[2]).ShouldBeTrue(line);
                continue;
            }
            if (line.StartsWith("# TYPE ", StringComparison.Ordinal))
            {
                string[] parts = line.Split(' ');
                parts.Length.ShouldBe(4, line);
                parts[3].ShouldBeOneOf("counter", "gauge", "histogram", "summary", "untyped");
                helped.ShouldContain(parts[2]);
                typed.TryAdd(parts[2], parts[3]).ShouldBeTrue(line);
                continue;
            }
            Match match = SampleLine().Match(line);
            match.Success.ShouldBeTrue(line);
            string name = match.Groups[1].Value;
            string family = typed.ContainsKey(name) ? name : Regex.Replace(name, "_(bucket|sum|count)$", "");
            typed.ShouldContainKey(family, line);
            string key = line[..line.LastIndexOf(' ')];
            double value = match.Groups[7].Value == "+Inf" ? double.PositiveInfinity : double.Parse(match.Groups[7].Value, CultureInfo.InvariantCulture);
            samples.TryAdd(key, value).ShouldBeTrue("duplicate series " + key);
        }
        return samples;
    }
}
