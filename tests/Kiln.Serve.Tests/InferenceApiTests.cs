using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Kiln.Serve.Tests;

public sealed class InferenceApiTests
{
    private static readonly float[] s_row = [1f, -2f, 0.5f, 3f];

    [Fact]
    public async Task Ping_ReportsHealthy_AndUnknownPathIsResourceNotFound()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();

        using HttpResponseMessage ping = await harness.Inference.GetAsync("ping");
        (await ping.Content.ReadAsStringAsync()).ShouldContain("\"Healthy\"");
        ping.StatusCode.ShouldBe(HttpStatusCode.OK);
        harness.Server.InferenceAddress.Host.ShouldBe("127.0.0.1");
        harness.Server.ManagementAddress.Port.ShouldNotBe(harness.Server.InferenceAddress.Port);

        using HttpResponseMessage missing = await harness.Inference.GetAsync("nope/nothing");
        await ServerHarness.ShouldBeErrorAsync(missing, 404, "ResourceNotFoundException");
    }

    [Fact]
    public async Task Predict_JsonAndNpy_GiveTheModelsArithmetic()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        float[] x = [.. s_row, .. s_row.Select(v => v * 2)];

        float[] fromJson = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", x);
        fromJson.ShouldBe(TinyOnnx.Expected(x, 1f), 1e-5f);

        using var npy = new ByteArrayContent(Npy(x, [2, 4]));
        npy.Headers.ContentType = new("application/x-npy");
        using HttpResponseMessage response = await harness.Inference.PostAsync("predictions/lin/1.0", npy);
        response.StatusCode.ShouldBe(HttpStatusCode.OK);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        json.RootElement.GetProperty("data").EnumerateArray().Select(v => v.GetSingle()).ToArray().ShouldBe(TinyOnnx.Expected(x, 1f), 1e-5f);
    }

    [Fact]
    public async Task Predict_BadInputs_GetTheirStatusAndErrorBody_AndTheServerKeepsServing()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o.MaxRequestSize = 4096);
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));

        using HttpResponseMessage unknownModel = await harness.Inference.PostAsJsonAsync("predictions/nope", new { data = s_row });
        (await ServerHarness.ShouldBeErrorAsync(unknownModel, 404, "ModelNotFoundException")).GetProperty("message").GetString().ShouldBe("Model not found: nope");

        using HttpResponseMessage unknownVersion = await harness.Inference.PostAsJsonAsync("predictions/lin/9.0", new { data = s_row });
        (await ServerHarness.ShouldBeErrorAsync(unknownVersion, 404, "ModelVersionNotFoundException")).GetProperty("message").GetString().ShouldBe("Model version: 9.0 does not exist for model: lin");

        using HttpResponseMessage malformed = await harness.Inference.PostAsync("predictions/lin", new StringContent("{\"data\": [1, 2", Encoding.UTF8, "application/json"));
        (await ServerHarness.ShouldBeErrorAsync(malformed, 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("JSON");

        using HttpResponseMessage wrongShape = await harness.Inference.PostAsJsonAsync("predictions/lin", new { data = new float[6], shape = new[] { 2, 3 } });
        (await ServerHarness.ShouldBeErrorAsync(wrongShape, 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("[N,4]");

        using HttpResponseMessage tooLarge = await harness.Inference.PostAsync("predictions/lin", new ByteArrayContent(new byte[5000]));
        (await ServerHarness.ShouldBeErrorAsync(tooLarge, 413, "RequestEntityTooLargeException")).GetProperty("message").GetString()!.ShouldContain("max_request_size");

        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(TinyOnnx.Expected(s_row, 1f), 1e-5f);
    }

    [Fact]
    public async Task Predict_ConcurrentRequestsWithBatching_EqualUnbatchedResults_AndFormBatches()
    {
        using var batches = new BatchSizeProbe();
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"), "initial_workers=1&batch_size=8&max_batch_delay=200");

        float[][] inputs = [.. Enumerable.Range(0, 16).Select(i => s_row.Select(v => v * (i + 1)).ToArray())];
        float[][] outputs = await Task.WhenAll(inputs.Select(x => ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", x)));

        for (int i = 0; i < inputs.Length; i++)
        {
            outputs[i].ShouldBe(TinyOnnx.Expected(inputs[i], 1f), 1e-4f);
        }
        batches.Largest.ShouldBeGreaterThan(1);
    }

    [Fact]
    public async Task Predict_NoWorkerOrFullQueue_Is503WithRetryAfterAndTorchServeBody()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("idle"), "initial_workers=0");
        using HttpResponseMessage noWorker = await harness.Inference.PostAsJsonAsync("predictions/idle", new { data = s_row, shape = new[] { 1, s_row.Length } });
        (await ServerHarness.ShouldBeErrorAsync(noWorker, 503, "ServiceUnavailableException")).GetProperty("message").GetString()!.ShouldContain("has no worker");
        noWorker.Headers.RetryAfter.ShouldNotBeNull();

        // ResNet-18 on one worker with a queue of one: 12 simultaneous images cannot all fit.
        await harness.RegisterAsync(await harness.ResNetArchiveAsync("slow", "jobQueueSize: 1\n"));
        byte[] png = Images.Png(seed: 3);
        HttpResponseMessage[] responses = await Task.WhenAll(Enumerable.Range(0, 12).Select(_ => harness.Inference.PostAsync("predictions/slow", new ByteArrayContent(png))));
        try
        {
            HttpResponseMessage[] refused = [.. responses.Where(r => r.StatusCode == HttpStatusCode.ServiceUnavailable)];
            refused.ShouldNotBeEmpty();
            responses.Count(r => r.StatusCode == HttpStatusCode.OK).ShouldBeGreaterThan(0);
            (refused.Length + responses.Count(r => r.StatusCode == HttpStatusCode.OK)).ShouldBe(12);
            await ServerHarness.ShouldBeErrorAsync(refused[0], 503, "ServiceUnavailableException");
            refused[0].Headers.RetryAfter.ShouldNotBeNull();
        }
        finally
        {
            foreach (HttpResponseMessage response in responses)
            {
                response.Dispose();
            }
        }
    }

    internal static byte[] Npy(float[] values, int[] shape)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        int padded = (header.Length + 11 + 63) / 64 * 64;
        header = header.PadRight(padded - 11) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange(Encoding.ASCII.GetBytes("NUMPY"));
        bytes.Add(1);
        bytes.Add(0);
        bytes.Add((byte)(header.Length & 0xFF));
        bytes.Add((byte)(header.Length >> 8));
        bytes.AddRange(Encoding.ASCII.GetBytes(header));
        foreach (float v in values)
        {
            byte[] b = new byte[4];
            BinaryPrimitives.WriteSingleLittleEndian(b, v);
            bytes.AddRange(b);
        }
        return [.. bytes];
    }
}
