using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Tests;

/// <summary>Triton's preferred batch sizes and queue delay, max_response_size, /explanations, the access log, canary in snapshots.</summary>
public sealed class ServingPolicyTests
{
    private static readonly float[] s_x = [1f, 2f, 3f, 4f];

    private static async Task<TimeSpan> TwoConcurrentAsync(ServerHarness harness)
    {
        var watch = Stopwatch.StartNew();
        float[][] results = await Task.WhenAll(
            ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x),
            ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x));
        watch.Stop();
        foreach (float[] result in results)
        {
            result.ShouldBe(TinyOnnx.Expected(s_x, 1f), 1e-5f);
        }
        return watch.Elapsed;
    }

    [Fact]
    public async Task PreferredBatchSize_RunsAsSoonAsItIsFormed_InsteadOfWaitingOutTheDelay()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // TorchServe's rule alone would hold two requests for the whole 4 s delay (batch_size 8 is never reached).
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"), "initial_workers=1&batch_size=8&max_batch_delay=4000&preferred_batch_size=1,2");
        (await TwoConcurrentAsync(harness)).ShouldBeLessThan(TimeSpan.FromSeconds(2.5));

        using HttpResponseMessage described = await harness.Management.GetAsync("models/lin");
        using JsonDocument json = JsonDocument.Parse(await described.Content.ReadAsStringAsync());
        json.RootElement[0].GetProperty("preferredBatchSizes").EnumerateArray().Select(e => e.GetInt32()).ShouldBe([1, 2]);
    }

    [Fact]
    public async Task WithoutPreferredSizes_TheBatchWaitsForMaxBatchDelay()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"), "initial_workers=1&batch_size=8&max_batch_delay=1500");
        (await TwoConcurrentAsync(harness)).ShouldBeGreaterThanOrEqualTo(TimeSpan.FromSeconds(1.4));
    }

    [Fact]
    public async Task MaxQueueDelay_CountsFromEnqueue_AndReplacesMaxBatchDelay()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", modelConfig: "batchSize: 8\nmaxBatchDelay: 5000\nmaxQueueDelayMicroseconds: 100000\n"));
        (await TwoConcurrentAsync(harness)).ShouldBeLessThan(TimeSpan.FromSeconds(2.5));
    }

    [Theory]
    [InlineData("preferred_batch_size=9&batch_size=8")]
    [InlineData("preferred_batch_size=0")]
    [InlineData("preferred_batch_size=two")]
    [InlineData("max_queue_delay_microseconds=-1")]
    public async Task BadBatchingParameters_Are400(string query)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await harness.LinearArchiveAsync("lin");
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={mar}&synchronous=true&{query}", null);
        await ServerHarness.ShouldBeErrorAsync(response, 400, "BadRequestException");
        using HttpResponseMessage list = await harness.Management.GetAsync("models/lin");
        await ServerHarness.ShouldBeErrorAsync(list, 404, "ModelNotFoundException");
    }

    [Fact]
    public async Task TensorBodies_AreDecodedOnTheRequestThread_SoABadOneIs400EvenWhenTheQueueCouldNotTakeIt()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("idle"), "initial_workers=0");
        // No worker: a good body is 503, a malformed one is refused before it would be queued.
        using HttpResponseMessage bad = await harness.Inference.PostAsync("predictions/idle", new StringContent("{\"data\": [1, 2,"));
        await ServerHarness.ShouldBeErrorAsync(bad, 400, "BadRequestException");
        using HttpResponseMessage good = await harness.Inference.PostAsJsonAsync("predictions/idle", new { data = s_x, shape = new[] { 1, 4 } });
        await ServerHarness.ShouldBeErrorAsync(good, 503, "ServiceUnavailableException");
    }

    [Fact]
    public async Task ResponseOverMaxResponseSize_Is413_AndTheServerKeepsServing()
    {
        // The linear model's JSON for one row is ~60 bytes, for 64 rows far more.
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o.MaxResponseSize = 400);
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        float[] big = [.. Enumerable.Range(0, 64 * TinyOnnx.Inputs).Select(i => (float)i)];
        using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync("predictions/lin", new { data = big, shape = new[] { 64, TinyOnnx.Inputs } });
        JsonElement error = await ServerHarness.ShouldBeErrorAsync(response, 413, "ResponseTooLargeException");
        error.GetProperty("message").GetString()!.ShouldContain("max_response_size (400 bytes)");
        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x)).ShouldBe(TinyOnnx.Expected(s_x, 1f), 1e-5f);
    }

    [Fact]
    public async Task Explanations_WithAHandlerThatCannotExplain_Is501_AndUnknownModelIs404()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync("explanations/lin", new { data = s_x, shape = new[] { 1, 4 } });
        JsonElement error = await ServerHarness.ShouldBeErrorAsync(response, 501, "NotImplementedException");
        error.GetProperty("message").GetString()!.ShouldContain("tensor");
        using HttpResponseMessage unknown = await harness.Inference.PostAsJsonAsync("explanations/nope/1.0", new { data = s_x });
        await ServerHarness.ShouldBeErrorAsync(unknown, 404, "ModelNotFoundException");
    }

    [Fact]
    public async Task AccessLog_HasOneLinePerRequest_WithMethodPathAndStatus()
    {
        using var logs = new CapturingLoggerFactory();
        await using (ServerHarness harness = await ServerHarness.StartAsync(loggerFactory: logs))
        {
            await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
            await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x);
            using HttpResponseMessage missing = await harness.Inference.GetAsync("predictions/nope");
            using var anonymous = new HttpClient { BaseAddress = harness.Server.InferenceAddress };
            using HttpResponseMessage unauthorized = await anonymous.PostAsync("predictions/lin", new ByteArrayContent([1]));
            unauthorized.StatusCode.ShouldBe(HttpStatusCode.Unauthorized);
        }
        List<string> access = [.. logs.Events.Where(e => e.Category == "Kiln.Serve.Access" && e.Id == 403 && e.Level == LogLevel.Information).Select(e => e.Message)];
        access.ShouldContain(m => m.Contains("\"POST /predictions/lin\" 200", StringComparison.Ordinal) && m.StartsWith("127.0.0.1:", StringComparison.Ordinal));
        access.ShouldContain(m => m.Contains("\"GET /predictions/nope\" 404", StringComparison.Ordinal) || m.Contains("\"GET /predictions/nope\" 405", StringComparison.Ordinal));
        access.ShouldContain(m => m.Contains("\"POST /predictions/lin\" 401", StringComparison.Ordinal));
        access.ShouldContain(m => m.Contains("\"POST /models", StringComparison.Ordinal));
    }

    [Fact]
    public async Task CanaryAndBatchingPolicy_SurviveARestartThroughTheSnapshot()
    {
        string store;
        await using (ServerHarness first = await ServerHarness.StartAsync())
        {
            store = first.Store;
            await first.RegisterAsync(await first.LinearArchiveAsync("lin", "1.0", scale: 1f));
            await first.RegisterAsync(await first.LinearArchiveAsync("lin", "2.0", scale: 2f), "initial_workers=1&batch_size=4&preferred_batch_size=2&max_queue_delay_microseconds=2500");
            using HttpResponseMessage canary = await first.Management.PutAsync("models/lin/2.0/canary?weight=25", null);
            canary.StatusCode.ShouldBe(HttpStatusCode.OK, await canary.Content.ReadAsStringAsync());
            await first.Server.StopAsync();
            await using ServerHarness second = await ServerHarness.StartAsync(store: store);
            second.Server.RestoredFromSnapshot.ShouldBeTrue();
            using HttpResponseMessage described = await second.Management.GetAsync("models/lin/2.0");
            string body = await described.Content.ReadAsStringAsync();
            using JsonDocument json = JsonDocument.Parse(body);
            JsonElement v2 = json.RootElement[0];
            v2.GetProperty("preferredBatchSizes").EnumerateArray().Select(e => e.GetInt32()).ShouldBe([2]);
            v2.GetProperty("maxQueueDelayMicroseconds").GetInt32().ShouldBe(2500);
            v2.GetProperty("isDefault").GetBoolean().ShouldBeFalse();

            // About a quarter of unversioned requests go to 2.0 (scale 2): 200 draws, binomial(200, 0.25) is within 20..80 with overwhelming odds.
            float[] v1 = TinyOnnx.Expected(s_x, 1f);
            int canaryHits = 0;
            for (int i = 0; i < 200; i++)
            {
                float[] y = await ServerHarness.PredictTensorAsync(second.Inference, "predictions/lin", s_x);
                canaryHits += Math.Abs(y[0] - v1[0]) > 1e-3f ? 1 : 0;
            }
            canaryHits.ShouldBeInRange(20, 80);
        }
    }
}
