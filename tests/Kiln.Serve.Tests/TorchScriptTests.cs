using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Kiln.Serve.Archives;
using Kiln.Serve.Inference;

namespace Kiln.Serve.Tests;

/// <summary>
/// TorchScript (<c>.pt</c>) models through TorchSharp's bundled libtorch, against tiny archives saved by PyTorch 1.13
/// (Fixtures/make_torchscript.py writes them; the tests never run Python).
/// </summary>
public sealed class TorchScriptTests
{
    private static readonly string s_fixtures = Path.Combine(AppContext.BaseDirectory, "Fixtures");
    private static readonly float[] s_row = [1f, -2f, 0.5f, 3f];

    [Fact]
    public async Task Predict_Json_GivesTheLinearArithmetic_AndSeveralOutputsAreKeyedByTritonNames()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "lin", "linear.pt"));
        await harness.RegisterAsync(await ArchiveAsync(harness, "two", "two_outputs.pt"));
        float[] x = [.. s_row, .. s_row.Select(v => v * 2)];

        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", x)).ShouldBe(TinyOnnx.Expected(x, 1f), 1e-5f);

        using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync("predictions/two", new { data = x, shape = new[] { 2, 4 } });
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        Floats(json.RootElement.GetProperty("output__0").GetProperty("data")).ShouldBe(TinyOnnx.Expected(x, 1f), 1e-5f);
        json.RootElement.GetProperty("output__0").GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([2L, 3L]);
        Floats(json.RootElement.GetProperty("output__1").GetProperty("data")).ShouldBe([.. x.Select(v => v * 2)], 1e-6f);
    }

    [Fact]
    public async Task Predict_ConcurrentRequestsBatchedOverSeveralWorkers_EqualUnbatchedResults()
    {
        using var batches = new BatchSizeProbe();
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "batched", "linear.pt"), "initial_workers=3&batch_size=8&max_batch_delay=100");
        await harness.RegisterAsync(await ArchiveAsync(harness, "single", "linear.pt"), "initial_workers=1");

        // One- and two-row requests: batches stack them along dimension 0 and split the rows back per request.
        float[][] inputs = [.. Enumerable.Range(0, 48).Select(i => Enumerable.Range(0, i % 3 == 0 ? 2 : 1).SelectMany(r => s_row.Select(v => (v * (i + 1)) - r)).ToArray())];
        float[][] batched = await Task.WhenAll(inputs.Select(x => ServerHarness.PredictTensorAsync(harness.Inference, "predictions/batched", x)));
        float[][] single = await Task.WhenAll(inputs.Select(x => ServerHarness.PredictTensorAsync(harness.Inference, "predictions/single", x)));

        for (int i = 0; i < inputs.Length; i++)
        {
            batched[i].ShouldBe(single[i], 1e-5f);
            batched[i].ShouldBe(TinyOnnx.Expected(inputs[i], 1f), 1e-4f);
        }
        batches.Largest.ShouldBeGreaterThan(1);
    }

    [Fact]
    public void Backend_SharedByEightThreads_GivesEachCallItsOwnResult()
    {
        using ModelBackend model = new BackendOptions { IntraOpThreads = 1, DeviceType = "cpu" }.Open(Path.Combine(s_fixtures, "linear.pt"));
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Thread[] threads = [.. Enumerable.Range(0, 8).Select(t => new Thread(() =>
        {
            for (int i = 0; i < 300; i++)
            {
                int rows = 1 + ((t + i) % 4);
                float[] x = [.. Enumerable.Range(0, rows * TinyOnnx.Inputs).Select(k => ((t * 1000) + (i * 10) + k) / 97f)];
                FloatTensor[] outputs = model.Run([new FloatTensor(x, [rows, TinyOnnx.Inputs])])[0];
                float[] expected = TinyOnnx.Expected(x, 1f);
                if (outputs.Length != 1 || !outputs[0].Shape.SequenceEqual(new long[] { rows, TinyOnnx.Outputs })
                    || outputs[0].Data.Zip(expected).Any(p => Math.Abs(p.First - p.Second) > 1e-3f * Math.Max(1f, Math.Abs(p.Second))))
                {
                    failures.Enqueue($"thread {t} call {i}: [{string.Join(",", outputs[0].Data)}] != [{string.Join(",", expected)}]");
                }
            }
        })).ToArray()];
        foreach (Thread thread in threads)
        {
            thread.Start();
        }
        foreach (Thread thread in threads)
        {
            thread.Join();
        }

        failures.ShouldBeEmpty();
        model.DeviceType.ShouldBe("cpu");
        model.OutputNames.ShouldBe(["output__0"]);
        model.OutputDimensions.Single().ShouldBe([-1L, -1L]);
    }

    [Fact]
    public void Backend_ConvEmbedder_TakesAnyImageSize_AndStacksABatchOfThem()
    {
        using ModelBackend model = new BackendOptions { DeviceType = "cpu" }.Open(Path.Combine(s_fixtures, "embedder.pt"));
        model.InputDimensions.ShouldBeEmpty();
        FloatTensor small = ImageNetTensor(Images.Pixels(seed: 2), Images.Size, Images.Size);
        FloatTensor other = ImageNetTensor(Images.Pixels(seed: 7), Images.Size, Images.Size);
        float[] crop = new float[3 * 5 * 7];
        for (int i = 0; i < crop.Length; i++)
        {
            crop[i] = (i % 11) - 4f;
        }

        FloatTensor[][] batch = model.Run([small, other]);
        FloatTensor[] odd = model.Run([new FloatTensor(crop, [1, 3, 5, 7])])[0];

        batch[0][0].Shape.ShouldBe([1L, 4L]);
        batch[0][0].Data.ShouldBe(ExpectedEmbedding(Images.Pixels(seed: 2)), 1e-3f);
        batch[1][0].Data.ShouldBe(ExpectedEmbedding(Images.Pixels(seed: 7)), 1e-3f);
        double[] means = [.. Enumerable.Range(0, 3).Select(c => crop.Skip(c * 35).Take(35).Average(v => (double)v))];
        odd[0].Data.ShouldBe([.. Enumerable.Range(0, 4).Select(k => (float)(Enumerable.Range(0, 3).Sum(c => (k - c) / 4.0 * means[c]) + (k / 10.0)))], 1e-4f);
    }

    [Fact]
    public async Task OpenInference_Metadata_SaysPytorchTorchscript_WithTritonTensorNames()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "two", "two_outputs.pt"));

        JsonElement before = await MetadataAsync(harness, "v2/models/two");
        before.GetProperty("platform").GetString().ShouldBe("pytorch_torchscript");
        before.GetProperty("inputs").EnumerateArray().Select(i => i.GetProperty("name").GetString()).ShouldBe(["input__0"]);
        before.GetProperty("inputs")[0].GetProperty("datatype").GetString().ShouldBe("FP32");
        before.GetProperty("outputs").EnumerateArray().Select(i => i.GetProperty("name").GetString()).ShouldBe(["output__0"]);

        // The number of outputs is known once the model has run.
        using HttpResponseMessage predicted = await harness.Inference.PostAsJsonAsync("predictions/two", new { data = s_row, shape = new[] { 1, 4 } });
        predicted.StatusCode.ShouldBe(HttpStatusCode.OK);
        JsonElement after = await MetadataAsync(harness, "v2/models/two/versions/1.0");
        after.GetProperty("outputs").EnumerateArray().Select(i => i.GetProperty("name").GetString()).ShouldBe(["output__0", "output__1"]);
        after.GetProperty("outputs")[0].GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([-1L, -1L]);
    }

    [Fact]
    public async Task Predict_ShapeTheModelRejects_Is400NamingTheComplaint_AndTheServerKeepsServing()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "lin", "linear.pt"));

        using HttpResponseMessage wrongShape = await harness.Inference.PostAsJsonAsync("predictions/lin", new { data = new float[6], shape = new[] { 2, 3 } });
        string message = (await ServerHarness.ShouldBeErrorAsync(wrongShape, 400, "BadRequestException")).GetProperty("message").GetString()!;
        message.ShouldContain("linear.pt");
        message.ShouldContain("[2,3]");
        message.ShouldContain("cannot be multiplied");
        message.ShouldNotContain("frame #");

        (await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_row)).ShouldBe(TinyOnnx.Expected(s_row, 1f), 1e-5f);
    }

    [Fact]
    public async Task Predict_ARejectedRequestInABatch_FailsOnlyItself()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // One worker, a long delay and batch_size 6: the six requests below run as one batch.
        await harness.RegisterAsync(await ArchiveAsync(harness, "lin", "linear.pt"), "initial_workers=1&batch_size=6&max_batch_delay=3000");
        Task<HttpResponseMessage> bad = harness.Inference.PostAsJsonAsync("predictions/lin", new { data = new float[6], shape = new[] { 2, 3 } });
        Task<float[]>[] good = [.. Enumerable.Range(0, 5).Select(i => ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", [.. s_row.Select(v => v + i)]))];
        using HttpResponseMessage rejected = await bad;
        await ServerHarness.ShouldBeErrorAsync(rejected, 400, "BadRequestException");
        for (int i = 0; i < good.Length; i++)
        {
            (await good[i]).ShouldBe(TinyOnnx.Expected([.. s_row.Select(v => v + i)], 1f), 1e-5f);
        }
    }

    [Fact]
    public async Task Register_PtFilesThatAreNotTorchScript_Are400ModelExceptionNamingTheFile()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string garbage = Path.Combine(harness.Store, "garbage.bin");
        await File.WriteAllBytesAsync(garbage, [.. Enumerable.Range(0, 512).Select(i => (byte)(i * 31))]);

        // torch.save(state_dict): a PyTorch zip archive, but no TorchScript code in it; and bytes that are no zip at all.
        foreach ((string mar, string source) in new[] { ("weights", Path.Combine(s_fixtures, "state_dict.pt")), ("garbage", garbage) })
        {
            var builder = new ModelArchiveBuilder(new ModelManifest(mar, "1.0", "model.pt", "tensor"));
            builder.AddFile(source, "model.pt");
            await builder.WriteAsync(Path.Combine(harness.Store, mar + ".mar"));

            using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={mar}.mar&synchronous=true&initial_workers=1", null);
            string message = (await ServerHarness.ShouldBeErrorAsync(response, 400, "ModelException")).GetProperty("message").GetString()!;
            message.ShouldContain("model.pt");
            message.ShouldContain("not a TorchScript archive");
        }
        using HttpResponseMessage models = await harness.Management.GetAsync("models");
        (await models.Content.ReadAsStringAsync()).ShouldNotContain("weights");
    }

    [Fact]
    public async Task Describe_SaysDeviceTypeCpu_OnThisHost()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "lin", "linear.pt"));

        using HttpResponseMessage response = await harness.Management.GetAsync("models/lin");
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        json.RootElement[0].GetProperty("deviceType").GetString().ShouldBe("cpu");
    }

    [Fact]
    public async Task OpenInference_Infer_TakesAnyShapeTheModelAccepts_AndGivesTheArithmetic()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "lin", "linear.pt"));
        float[] x = [.. s_row, .. s_row.Select(v => -v)];

        using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync("v2/models/lin/infer",
            new { inputs = new[] { new { name = "input__0", datatype = "FP32", shape = new[] { 2, 4 }, data = x } } });
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        JsonElement output = json.RootElement.GetProperty("outputs")[0];
        output.GetProperty("name").GetString().ShouldBe("output__0");
        output.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([2L, 3L]);
        Floats(output.GetProperty("data")).ShouldBe(TinyOnnx.Expected(x, 1f), 1e-5f);
    }

    [Fact]
    public async Task ImageEmbedder_TorchScriptModel_GetsTheImageNetNormalisedChannelMeansThroughItsWeights()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "embed", "embedder.pt", "image_embedder"));

        using HttpResponseMessage response = await harness.Inference.PostAsync("predictions/embed", new ByteArrayContent(Images.Png(seed: 5)));
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        Floats(json.RootElement).ShouldBe(ExpectedEmbedding(Images.Pixels(seed: 5)), 1e-3f);
    }

    /// <summary>Writes a .mar of one fixture into the store and returns its file name.</summary>
    private static async Task<string> ArchiveAsync(ServerHarness harness, string name, string fixture, string handler = "tensor")
    {
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", fixture, handler));
        builder.AddFile(Path.Combine(s_fixtures, fixture));
        string mar = name + ".mar";
        await builder.WriteAsync(Path.Combine(harness.Store, mar));
        return mar;
    }

    private static async Task<JsonElement> MetadataAsync(ServerHarness harness, string path)
    {
        using HttpResponseMessage response = await harness.Inference.GetAsync(path);
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        return json.RootElement.Clone();
    }

    /// <summary>
    /// embedder.pt's arithmetic on a 224×224 RGBA picture (no resize needed): ImageNet normalisation, then
    /// out[k] = Σc M[k,c]·mean(x[c]) + b[k] with M[k,c] = (k − c)/4 and b[k] = k/10.
    /// </summary>
    private static float[] ExpectedEmbedding(byte[] rgba)
    {
        float[] mean = [0.485f, 0.456f, 0.406f], std = [0.229f, 0.224f, 0.225f];
        double[] channel = new double[3];
        for (int i = 0; i < rgba.Length; i += 4)
        {
            for (int c = 0; c < 3; c++)
            {
                channel[c] += rgba[i + c];
            }
        }
        int pixels = rgba.Length / 4;
        double[] normalized = [.. channel.Select((sum, c) => ((sum / pixels / 255.0) - mean[c]) / std[c])];
        return [.. Enumerable.Range(0, 4).Select(k => (float)(Enumerable.Range(0, 3).Sum(c => (k - c) / 4.0 * normalized[c]) + (k / 10.0)))];
    }

    /// <summary>A [1,3,H,W] planar tensor of an RGBA picture, ImageNet-normalised as image_embedder does without preprocess.onnx.</summary>
    private static FloatTensor ImageNetTensor(byte[] rgba, int height, int width)
    {
        float[] mean = [0.485f, 0.456f, 0.406f], std = [0.229f, 0.224f, 0.225f];
        int plane = height * width;
        float[] data = new float[3 * plane];
        for (int p = 0; p < plane; p++)
        {
            for (int c = 0; c < 3; c++)
            {
                data[(c * plane) + p] = ((rgba[(p * 4) + c] / 255f) - mean[c]) / std[c];
            }
        }
        return new FloatTensor(data, [1, 3, height, width]);
    }

    private static float[] Floats(JsonElement array) => [.. array.EnumerateArray().Select(v => v.GetSingle())];
}
