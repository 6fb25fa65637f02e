using System.IO.Compression;
using System.Net;
using System.Text.Json;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Serve.Tests;

public sealed class ManagementApiTests
{
    private static readonly float[] s_row = [1f, -2f, 0.5f, 3f];

    [Fact]
    public async Task ImageEmbedder_PngBody_EqualsInProcessResNet18_AndUndecodableIs400()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.ResNetArchiveAsync("resnet18"));

        using HttpResponseMessage response = await harness.Inference.PostAsync("predictions/resnet18", new ByteArrayContent(Images.Png(seed: 5)));
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        float[] served = JsonSerializer.Deserialize<float[]>(body)!;

        served.Length.ShouldBe(512);
        served.ShouldBe(InProcessEmbedding(Images.Planar(seed: 5)), 1e-4f);

        using HttpResponseMessage garbage = await harness.Inference.PostAsync("predictions/resnet18", new ByteArrayContent([1, 2, 3, 4, 5]));
        (await ServerHarness.ShouldBeErrorAsync(garbage, 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("decodable image");
    }

    [Fact]
    public async Task Register_Describe_List_Conflicts_AndBadParameters()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        foreach (string name in new[] { "a", "b", "c" })
        {
            await harness.RegisterAsync(await harness.LinearArchiveAsync(name), "initial_workers=2&batch_size=4&max_batch_delay=7");
        }

        using HttpResponseMessage described = await harness.Management.GetAsync("models/b");
        using JsonDocument description = JsonDocument.Parse(await described.Content.ReadAsStringAsync());
        JsonElement b = description.RootElement.EnumerateArray().Single();
        b.GetProperty("modelName").GetString().ShouldBe("b");
        b.GetProperty("modelVersion").GetString().ShouldBe("1.0");
        b.GetProperty("modelUrl").GetString().ShouldBe("b-1.0.mar");
        b.GetProperty("batchSize").GetInt32().ShouldBe(4);
        b.GetProperty("maxBatchDelay").GetInt32().ShouldBe(7);
        b.GetProperty("workers").EnumerateArray().Select(w => w.GetProperty("status").GetString()).ShouldBe(["READY", "READY"]);
        b.GetProperty("jobQueueStatus").GetProperty("remainingCapacity").GetInt32().ShouldBe(100);

        using JsonDocument page = JsonDocument.Parse(await harness.Management.GetStringAsync("models?limit=2"));
        page.RootElement.GetProperty("nextPageToken").GetString().ShouldBe("2");
        page.RootElement.GetProperty("models").EnumerateArray().Select(m => m.GetProperty("modelName").GetString()).ShouldBe(["a", "b"]);
        using JsonDocument rest = JsonDocument.Parse(await harness.Management.GetStringAsync("models?limit=2&next_page_token=2"));
        rest.RootElement.TryGetProperty("nextPageToken", out _).ShouldBeFalse();
        rest.RootElement.GetProperty("models").EnumerateArray().Single().GetProperty("modelUrl").GetString().ShouldBe("c-1.0.mar");

        using HttpResponseMessage again = await harness.Management.PostAsync("models?url=a-1.0.mar", null);
        await ServerHarness.ShouldBeErrorAsync(again, 409, "ConflictStatusException");
        using HttpResponseMessage noUrl = await harness.Management.PostAsync("models", null);
        (await ServerHarness.ShouldBeErrorAsync(noUrl, 400, "BadRequestException")).GetProperty("message").GetString().ShouldBe("Parameter url is required.");
        using HttpResponseMessage badInt = await harness.Management.PostAsync("models?url=a-1.0.mar&batch_size=many", null);
        await ServerHarness.ShouldBeErrorAsync(badInt, 400, "BadRequestException");
        using HttpResponseMessage missing = await harness.Management.PostAsync("models?url=missing.mar", null);
        await ServerHarness.ShouldBeErrorAsync(missing, 400, "DownloadArchiveException");
        using HttpResponseMessage remote = await harness.Management.PostAsync("models?url=http://169.254.169.254/x.mar", null);
        await ServerHarness.ShouldBeErrorAsync(remote, 400, "DownloadArchiveException");
        using HttpResponseMessage unknown = await harness.Management.GetAsync("models/zzz");
        await ServerHarness.ShouldBeErrorAsync(unknown, 404, "ModelNotFoundException");
        using HttpResponseMessage async = await harness.Management.PostAsync($"models?url={await harness.LinearArchiveAsync("d")}", null);
        async.StatusCode.ShouldBe(HttpStatusCode.Accepted);
    }

    [Fact]
    public async Task Register_ZipSlipArchive_Is400AndWritesNothingOutside()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = Path.Combine(harness.Store, "evil.mar");
        using (ZipArchive zip = ZipFile.Open(mar, ZipArchiveMode.Create))
        {
            using (var writer = new StreamWriter(zip.CreateEntry("MAR-INF/MANIFEST.json").Open()))
            {
                writer.Write("{\"model\":{\"modelName\":\"evil\",\"serializedFile\":\"m.onnx\",\"handler\":\"tensor\"}}");
            }
            using (var writer = new StreamWriter(zip.CreateEntry("../../../../../../tmp/kiln-zip-slip.txt").Open()))
            {
                writer.Write("pwned");
            }
        }
        File.Delete("/tmp/kiln-zip-slip.txt");

        using HttpResponseMessage response = await harness.Management.PostAsync("models?url=evil.mar&synchronous=true", null);

        (await ServerHarness.ShouldBeErrorAsync(response, 400, "ModelException")).GetProperty("message").GetString()!.ShouldContain("outside the archive");
        File.Exists("/tmp/kiln-zip-slip.txt").ShouldBeFalse();
        using HttpResponseMessage notThere = await harness.Management.GetAsync("models/evil");
        notThere.StatusCode.ShouldBe(HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task ScaleWorkers_UnderConcurrentLoad_DropsNoRequest()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"), "initial_workers=1&batch_size=4&max_batch_delay=2");
        const int Requests = 400;
        int next = -1;
        int succeeded = 0;
        var deadline = DateTime.UtcNow.AddSeconds(60);

        async Task ClientAsync()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < Requests && DateTime.UtcNow < deadline)
            {
                float[] x = [.. s_row.Select(v => v + i)];
                float[] y = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", x);
                y.ShouldBe(TinyOnnx.Expected(x, 1f), 1e-3f);
                Interlocked.Increment(ref succeeded);
            }
        }

        Task load = Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(ClientAsync)));
        int[] targets = [4, 1, 3, 2];
        foreach (int workers in targets)
        {
            using HttpResponseMessage scaled = await harness.Management.PutAsync($"models/lin?min_worker={workers}&synchronous=true", null);
            (await scaled.Content.ReadAsStringAsync()).ShouldContain($"Workers scaled to {workers} for model: lin");
            await Task.Delay(50);
        }
        await load;

        succeeded.ShouldBe(Requests);
        using JsonDocument description = JsonDocument.Parse(await harness.Management.GetStringAsync("models/lin"));
        description.RootElement[0].GetProperty("workers").GetArrayLength().ShouldBe(2);
        using HttpResponseMessage invalid = await harness.Management.PutAsync("models/lin?min_worker=3&max_worker=1", null);
        (await ServerHarness.ShouldBeErrorAsync(invalid, 400, "BadRequestException")).GetProperty("message").GetString().ShouldBe("max_worker cannot be less than min_worker.");
    }

    [Fact]
    public async Task SetDefault_SwitchesUnversionedPredictions_AndDefaultCannotBeDeletedWhileOthersExist()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "1.0", scale: 1f));
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "2.0", scale: -3f));

        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(TinyOnnx.Expected(s_row, 1f), 1e-5f);
        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin/2.0", s_row)).ShouldBe(TinyOnnx.Expected(s_row, -3f), 1e-5f);

        using HttpResponseMessage set = await harness.Management.PutAsync("models/lin/2.0/set-default", null);
        (await set.Content.ReadAsStringAsync()).ShouldContain("Default version successfully updated for model \\u0022lin\\u0022 to \\u00222.0\\u0022");
        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(TinyOnnx.Expected(s_row, -3f), 1e-5f);
        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin/1.0", s_row)).ShouldBe(TinyOnnx.Expected(s_row, 1f), 1e-5f);

        using JsonDocument all = JsonDocument.Parse(await harness.Management.GetStringAsync("models/lin/all"));
        all.RootElement.EnumerateArray().Select(v => v.GetProperty("modelVersion").GetString()).Order().ShouldBe(["1.0", "2.0"]);
        using HttpResponseMessage deleteDefault = await harness.Management.DeleteAsync("models/lin/2.0");
        await ServerHarness.ShouldBeErrorAsync(deleteDefault, 403, "InvalidModelVersionException");
        using HttpResponseMessage setMissing = await harness.Management.PutAsync("models/lin/7.0/set-default", null);
        await ServerHarness.ShouldBeErrorAsync(setMissing, 404, "ModelVersionNotFoundException");
    }

    [Fact]
    public async Task Canary_SendsItsShareOfUnversionedRequests_AndNeverRedirectsVersionedOnes()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "1.0", scale: 1f));
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin", "2.0", scale: -3f));
        float[] stable = TinyOnnx.Expected(s_row, 1f), canary = TinyOnnx.Expected(s_row, -3f);

        using (HttpResponseMessage set = await harness.Management.PutAsync("models/lin/2.0/canary?weight=30", null))
        {
            set.StatusCode.ShouldBe(HttpStatusCode.OK);
        }
        int toCanary = 0;
        const int Requests = 300;
        for (int i = 0; i < Requests; i++)
        {
            float[] result = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row);
            bool isCanary = Math.Abs(result[0] - canary[0]) < 1e-4f;
            (isCanary || Math.Abs(result[0] - stable[0]) < 1e-4f).ShouldBeTrue();
            toCanary += isCanary ? 1 : 0;
        }
        // 30 % of 300 is 90; 3.5 standard deviations (about 28) either side.
        toCanary.ShouldBeInRange(62, 118);
        for (int i = 0; i < 20; i++)
        {
            (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin/1.0", s_row)).ShouldBe(stable, 1e-5f);
        }

        using (HttpResponseMessage all = await harness.Management.PutAsync("models/lin/2.0/canary?weight=100", null))
        {
            all.StatusCode.ShouldBe(HttpStatusCode.OK);
        }
        for (int i = 0; i < 20; i++)
        {
            (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(canary, 1e-5f);
        }
        using (HttpResponseMessage end = await harness.Management.PutAsync("models/lin/2.0/canary?weight=0", null))
        {
            (await end.Content.ReadAsStringAsync()).ShouldContain("ended");
        }
        for (int i = 0; i < 20; i++)
        {
            (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(stable, 1e-5f);
        }

        using HttpResponseMessage onDefault = await harness.Management.PutAsync("models/lin/1.0/canary?weight=10", null);
        await ServerHarness.ShouldBeErrorAsync(onDefault, 400, "BadRequestException");
        using HttpResponseMessage badWeight = await harness.Management.PutAsync("models/lin/2.0/canary?weight=150", null);
        await ServerHarness.ShouldBeErrorAsync(badWeight, 400, "BadRequestException");
        using HttpResponseMessage missing = await harness.Management.PutAsync("models/lin/9.0/canary?weight=10", null);
        await ServerHarness.ShouldBeErrorAsync(missing, 404, "ModelVersionNotFoundException");
    }

    [Fact]
    public async Task Unregister_WithRequestsInFlight_DrainsThemThenForgetsTheModel()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // A worker that waits up to 2 s to fill a batch of 8 holds all six requests in flight while DELETE arrives.
        await harness.RegisterAsync(await harness.ResNetArchiveAsync("resnet18"), "initial_workers=1&batch_size=8&max_batch_delay=2000");
        byte[] png = Images.Png(seed: 2);
        Task<HttpResponseMessage>[] inFlight = [.. Enumerable.Range(0, 6).Select(_ => harness.Inference.PostAsync("predictions/resnet18", new ByteArrayContent(png)))];
        await WaitForPendingAsync(harness, "resnet18", inFlight.Length);

        using HttpResponseMessage deleted = await harness.Management.DeleteAsync("models/resnet18");

        (await deleted.Content.ReadAsStringAsync()).ShouldContain("unregistered");
        deleted.StatusCode.ShouldBe(HttpStatusCode.OK);
        foreach (Task<HttpResponseMessage> request in inFlight)
        {
            using HttpResponseMessage response = await request;
            response.StatusCode.ShouldBe(HttpStatusCode.OK);
        }
        using HttpResponseMessage gone = await harness.Inference.PostAsync("predictions/resnet18", new ByteArrayContent(png));
        await ServerHarness.ShouldBeErrorAsync(gone, 404, "ModelNotFoundException");
    }

    private static async Task WaitForPendingAsync(ServerHarness harness, string model, int count)
    {
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            using JsonDocument description = JsonDocument.Parse(await harness.Management.GetStringAsync($"models/{model}"));
            if (description.RootElement[0].GetProperty("jobQueueStatus").GetProperty("pendingRequests").GetInt32() >= count)
            {
                return;
            }
            await Task.Delay(10);
        }
        throw new TimeoutException("Requests never queued up.");
    }

    private static float[] InProcessEmbedding(float[] planar)
    {
        using InferenceSession preprocess = OnnxSessionFactory.Open(ServerHarness.Preprocess);
        using InferenceSession resnet = OnnxSessionFactory.Open(ServerHarness.ResNet);
        long[] shape = [1, 3, Images.Size, Images.Size];
        using OrtValue input = OrtValue.CreateTensorValueFromMemory(planar, shape);
        using RunOptions options = new();
        using IDisposableReadOnlyCollection<OrtValue> prepared = preprocess.Run(options, [preprocess.InputMetadata.Keys.Single()], [input], [preprocess.OutputMetadata.Keys.Single()]);
        using IDisposableReadOnlyCollection<OrtValue> features = resnet.Run(options, [resnet.InputMetadata.Keys.Single()], [prepared[0]], [resnet.OutputMetadata.Keys.Single()]);
        return features[0].GetTensorDataAsSpan<float>().ToArray();
    }
}
