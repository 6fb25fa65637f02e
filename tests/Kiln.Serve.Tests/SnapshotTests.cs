using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Tests;

public sealed class SnapshotTests
{
    private static async Task<ServerHarness> SetUpAsync()
    {
        ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "1.0", scale: 1f), "initial_workers=1&batch_size=4&max_batch_delay=7");
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "2.0", scale: 2f));
        using (HttpResponseMessage scaled = await harness.Management.PutAsync("models/lin/2.0?min_worker=2&max_worker=3&synchronous=true", null))
        {
            scaled.StatusCode.ShouldBe(HttpStatusCode.OK);
        }
        using (HttpResponseMessage set = await harness.Management.PutAsync("models/lin/2.0/set-default", null))
        {
            set.StatusCode.ShouldBe(HttpStatusCode.OK);
        }
        return harness;
    }

    private static async Task<Dictionary<string, JsonElement>> DescribeAsync(ServerHarness harness)
    {
        using HttpResponseMessage response = await harness.Management.GetAsync("models/lin/all");
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        return json.RootElement.EnumerateArray().ToDictionary(v => v.GetProperty("modelVersion").GetString()!, v => v.Clone());
    }

    [Fact]
    public async Task RestartRestoresModelsVersionsDefaultsAndWorkers()
    {
        await using ServerHarness first = await SetUpAsync();
        Dictionary<string, JsonElement> before = await DescribeAsync(first);
        float[] x = [.. Enumerable.Range(0, TinyOnnx.Inputs).Select(i => (float)i)];
        float[] v1Before = await ServerHarness.PredictTensorAsync(first.Inference, "predictions/lin/1.0", x);
        float[] defaultBefore = await ServerHarness.PredictTensorAsync(first.Inference, "predictions/lin", x);
        defaultBefore.ShouldNotBe(v1Before);
        await first.Server.StopAsync();
        Directory.GetFiles(Path.Combine(first.Store, "snapshots"), "*-snapshot.json").Length.ShouldBeGreaterThanOrEqualTo(4);

        await using ServerHarness second = await ServerHarness.StartAsync(store: first.Store);
        second.Server.RestoredFromSnapshot.ShouldBeTrue();
        Dictionary<string, JsonElement> after = await DescribeAsync(second);
        after.Keys.Order().ShouldBe(["1.0", "2.0"]);
        foreach (string version in before.Keys)
        {
            foreach (string field in new[] { "isDefault", "minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout", "modelUrl" })
            {
                after[version].GetProperty(field).ToString().ShouldBe(before[version].GetProperty(field).ToString(), $"{version} {field}");
            }
            after[version].GetProperty("workers").GetArrayLength().ShouldBe(before[version].GetProperty("workers").GetArrayLength(), version);
        }
        after["2.0"].GetProperty("isDefault").GetBoolean().ShouldBeTrue();
        after["2.0"].GetProperty("workers").GetArrayLength().ShouldBe(2);
        after["1.0"].GetProperty("batchSize").GetInt32().ShouldBe(4);

        (await ServerHarness.PredictTensorAsync(second.Inference, "predictions/lin/1.0", x)).ShouldBe(v1Before, 1e-5f);
        (await ServerHarness.PredictTensorAsync(second.Inference, "predictions/lin", x)).ShouldBe(defaultBefore, 1e-5f);
    }

    [Fact]
    public async Task NoConfigSnapshotsRestoresNothing()
    {
        await using ServerHarness first = await SetUpAsync();
        await first.Server.StopAsync();
        await using ServerHarness second = await ServerHarness.StartAsync(o => o.NoConfigSnapshots = true, store: first.Store);
        second.Server.RestoredFromSnapshot.ShouldBeFalse();
        using HttpResponseMessage response = await second.Management.GetAsync("models/lin");
        await ServerHarness.ShouldBeErrorAsync(response, 404, "ModelNotFoundException");
    }

    [Fact]
    public async Task CorruptNewestSnapshotFallsBackToThePreviousWithAWarning()
    {
        await using ServerHarness first = await SetUpAsync();
        await first.Server.StopAsync();
        string folder = Path.Combine(first.Store, "snapshots");
        string newest = Directory.GetFiles(folder, "*-snapshot.json").Order(StringComparer.Ordinal).Last();
        // Newer than every real one: the previous (real newest) must be used.
        string corrupt = Path.Combine(folder, "99991231235959999-000001-snapshot.json");
        await File.WriteAllTextAsync(corrupt, "{\"models\": {\"lin\": ");

        using var logs = new CapturingLoggerFactory();
        await using ServerHarness second = await ServerHarness.StartAsync(store: first.Store, loggerFactory: logs);
        logs.Events.ShouldContain(e => e.Id == 110 && e.Level == LogLevel.Warning);
        Dictionary<string, JsonElement> after = await DescribeAsync(second);
        after["2.0"].GetProperty("isDefault").GetBoolean().ShouldBeTrue();
        File.Exists(newest).ShouldBeTrue();
    }
}
