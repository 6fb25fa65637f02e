using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Kiln.Serve.Tests;

public sealed class OpenInferenceTests
{
    private static readonly float[] s_x = [1.5f, -2f, 0.1f, 7f, 0.3f, 0.7f, -11f, 3.25f];

    private static async Task<ServerHarness> StartWithLinearAsync()
    {
        ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        return harness;
    }

    private static async Task<JsonElement> JsonAsync(HttpResponseMessage response, HttpStatusCode expected)
    {
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(expected, body);
        using JsonDocument json = JsonDocument.Parse(body);
        return json.RootElement.Clone();
    }

    private static async Task<string> ErrorAsync(HttpResponseMessage response, HttpStatusCode expected)
    {
        JsonElement json = await JsonAsync(response, expected);
        string error = json.GetProperty("error").GetString()!;
        error.ShouldNotBeNullOrWhiteSpace();
        return error;
    }

    private static byte[] Little(float[] values)
    {
        byte[] bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]);
        }
        return bytes;
    }

    [Fact]
    public async Task HealthMetadataAndReadiness()
    {
        await using ServerHarness harness = await StartWithLinearAsync();
        (await JsonAsync(await harness.Inference.GetAsync("v2/health/live"), HttpStatusCode.OK)).GetProperty("live").GetBoolean().ShouldBeTrue();
        (await JsonAsync(await harness.Inference.GetAsync("v2/health/ready"), HttpStatusCode.OK)).GetProperty("ready").GetBoolean().ShouldBeTrue();
        foreach (string path in new[] { "v2/models/lin", "v2/models/lin/versions/1.0" })
        {
            JsonElement metadata = await JsonAsync(await harness.Inference.GetAsync(path), HttpStatusCode.OK);
            metadata.GetProperty("name").GetString().ShouldBe("lin");
            metadata.GetProperty("versions").EnumerateArray().Select(v => v.GetString()).ShouldBe(["1.0"]);
            metadata.GetProperty("platform").GetString().ShouldBe("onnxruntime_onnx");
            JsonElement input = metadata.GetProperty("inputs").EnumerateArray().Single();
            input.GetProperty("name").GetString().ShouldBe("X");
            input.GetProperty("datatype").GetString().ShouldBe("FP32");
            input.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([-1, TinyOnnx.Inputs]);
            JsonElement output = metadata.GetProperty("outputs").EnumerateArray().Single();
            output.GetProperty("name").GetString().ShouldBe("Y");
            output.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([-1, TinyOnnx.Outputs]);
        }
        (await JsonAsync(await harness.Inference.GetAsync("v2/models/lin/ready"), HttpStatusCode.OK)).GetProperty("ready").GetBoolean().ShouldBeTrue();
        (await JsonAsync(await harness.Inference.GetAsync("v2/models/lin/versions/1.0/ready"), HttpStatusCode.OK)).GetProperty("ready").GetBoolean().ShouldBeTrue();
        await ErrorAsync(await harness.Inference.GetAsync("v2/models/nope"), HttpStatusCode.NotFound);
        await ErrorAsync(await harness.Inference.GetAsync("v2/models/lin/versions/9.9"), HttpStatusCode.NotFound);
        await ErrorAsync(await harness.Inference.GetAsync("v2/models/lin/versions/9.9/ready"), HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task JsonInferEqualsTorchServePrediction()
    {
        await using ServerHarness harness = await StartWithLinearAsync();
        float[] expected = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x);
        foreach (string path in new[] { "v2/models/lin/infer", "v2/models/lin/versions/1.0/infer" })
        {
            // Nested data is accepted as well as flat.
            object data = path.Contains("versions", StringComparison.Ordinal) ? s_x : new[] { s_x[..4], s_x[4..] };
            using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync(path, new
            {
                id = "req-7",
                inputs = new[] { new { name = "X", shape = new[] { 2, TinyOnnx.Inputs }, datatype = "FP32", data } },
            });
            JsonElement json = await JsonAsync(response, HttpStatusCode.OK);
            json.GetProperty("model_name").GetString().ShouldBe("lin");
            json.GetProperty("model_version").GetString().ShouldBe("1.0");
            json.GetProperty("id").GetString().ShouldBe("req-7");
            JsonElement output = json.GetProperty("outputs").EnumerateArray().Single();
            output.GetProperty("name").GetString().ShouldBe("Y");
            output.GetProperty("datatype").GetString().ShouldBe("FP32");
            output.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([2, TinyOnnx.Outputs]);
            output.GetProperty("data").EnumerateArray().Select(v => v.GetSingle()).ToArray().ShouldBe(expected);
        }
        expected.ShouldBe(TinyOnnx.Expected(s_x, 1f), tolerance: 1e-4f);
    }

    [Fact]
    public async Task BinaryRequestAndResponseRoundTripExactly()
    {
        await using ServerHarness harness = await StartWithLinearAsync();
        float[] expected = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x);
        byte[] header = JsonSerializer.SerializeToUtf8Bytes(new
        {
            inputs = new[] { new { name = "X", shape = new[] { 2, TinyOnnx.Inputs }, datatype = "FP32", parameters = new { binary_data_size = s_x.Length * 4 } } },
            parameters = new { binary_data_output = true },
        });
        using var content = new ByteArrayContent([.. header, .. Little(s_x)]);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        content.Headers.Add("Inference-Header-Content-Length", header.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using HttpResponseMessage response = await harness.Inference.PostAsync("v2/models/lin/infer", content);
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, Encoding.UTF8.GetString(body));
        int jsonLength = int.Parse(response.Headers.GetValues("Inference-Header-Content-Length").Single(), System.Globalization.CultureInfo.InvariantCulture);
        using JsonDocument json = JsonDocument.Parse(body.AsMemory(0, jsonLength));
        JsonElement output = json.RootElement.GetProperty("outputs").EnumerateArray().Single();
        output.TryGetProperty("data", out _).ShouldBeFalse();
        output.GetProperty("parameters").GetProperty("binary_data_size").GetInt32().ShouldBe(expected.Length * 4);
        body.AsSpan(jsonLength).ToArray().ShouldBe(Little(expected));

        // Binary in, JSON out for one named output.
        byte[] header2 = JsonSerializer.SerializeToUtf8Bytes(new
        {
            inputs = new[] { new { name = "X", shape = new[] { 2, TinyOnnx.Inputs }, datatype = "FP32", parameters = new { binary_data_size = s_x.Length * 4 } } },
            outputs = new[] { new { name = "Y", parameters = new { binary_data = false } } },
        });
        using var content2 = new ByteArrayContent([.. header2, .. Little(s_x)]);
        content2.Headers.Add("Inference-Header-Content-Length", header2.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
        JsonElement json2 = await JsonAsync(await harness.Inference.PostAsync("v2/models/lin/infer", content2), HttpStatusCode.OK);
        json2.GetProperty("outputs")[0].GetProperty("data").EnumerateArray().Select(v => v.GetSingle()).ToArray().ShouldBe(expected);
    }

    [Fact]
    public async Task BadRequestsNameTheInputAndUnknownModelsAre404()
    {
        await using ServerHarness harness = await StartWithLinearAsync();
        Task<HttpResponseMessage> Infer(string path, string name, int[] shape, string datatype, float[] data) =>
            harness.Inference.PostAsJsonAsync(path, new { inputs = new[] { new { name, shape, datatype, data } } });

        (await ErrorAsync(await Infer("v2/models/lin/infer", "X", [2, 4, 1], "FP32", s_x), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        (await ErrorAsync(await Infer("v2/models/lin/infer", "X", [1, 8], "FP32", s_x), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        (await ErrorAsync(await Infer("v2/models/lin/infer", "X", [2, 4], "INT32", s_x), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        (await ErrorAsync(await Infer("v2/models/lin/infer", "X", [3, 4], "FP32", s_x), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        (await ErrorAsync(await Infer("v2/models/lin/infer", "input0", [2, 4], "FP32", s_x), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        using (var malformed = new StringContent("{\"inputs\": [", Encoding.UTF8, "application/json"))
        {
            await ErrorAsync(await harness.Inference.PostAsync("v2/models/lin/infer", malformed), HttpStatusCode.BadRequest);
        }
        byte[] shortHeader = Encoding.UTF8.GetBytes("{\"inputs\":[{\"name\":\"X\",\"shape\":[2,4],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":32}}]}");
        using (var binaryTooShort = new ByteArrayContent([.. shortHeader, 1, 2, 3]))
        {
            binaryTooShort.Headers.Add("Inference-Header-Content-Length", shortHeader.Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
            await ErrorAsync(await harness.Inference.PostAsync("v2/models/lin/infer", binaryTooShort), HttpStatusCode.BadRequest);
        }
        await ErrorAsync(await Infer("v2/models/nope/infer", "X", [2, 4], "FP32", s_x), HttpStatusCode.NotFound);
        await ErrorAsync(await Infer("v2/models/lin/versions/2.0/infer", "X", [2, 4], "FP32", s_x), HttpStatusCode.NotFound);
        using HttpResponseMessage wrongOutput = await harness.Inference.PostAsJsonAsync("v2/models/lin/infer", new
        {
            inputs = new[] { new { name = "X", shape = new[] { 2, 4 }, datatype = "FP32", data = s_x } },
            outputs = new[] { new { name = "Z" } },
        });
        (await ErrorAsync(wrongOutput, HttpStatusCode.BadRequest)).ShouldContain("'Z'");
    }

    [Fact]
    public async Task KServeV1PredictReturnsOnePredictionPerInstance()
    {
        await using ServerHarness harness = await StartWithLinearAsync();
        float[] expected = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x);
        using HttpResponseMessage response = await harness.Inference.PostAsJsonAsync("v1/models/lin:predict", new { instances = new[] { s_x[..4], s_x[4..] } });
        JsonElement json = await JsonAsync(response, HttpStatusCode.OK);
        float[][] predictions = [.. json.GetProperty("predictions").EnumerateArray().Select(p => p.EnumerateArray().Select(v => v.GetSingle()).ToArray())];
        predictions.Length.ShouldBe(2);
        predictions[0].ShouldBe(expected[..3]);
        predictions[1].ShouldBe(expected[3..]);
        (await JsonAsync(await harness.Inference.GetAsync("v1/models/lin"), HttpStatusCode.OK)).GetProperty("ready").GetBoolean().ShouldBeTrue();
        await ErrorAsync(await harness.Inference.PostAsJsonAsync("v1/models/nope:predict", new { instances = new[] { s_x[..4] } }), HttpStatusCode.NotFound);
        await ErrorAsync(await harness.Inference.PostAsJsonAsync("v1/models/lin:explain", new { instances = new[] { s_x[..4] } }), HttpStatusCode.NotFound);
        (await ErrorAsync(await harness.Inference.PostAsJsonAsync("v1/models/lin:predict", new { instances = new[] { s_x[..3] } }), HttpStatusCode.BadRequest)).ShouldContain("'X'");
        await ErrorAsync(await harness.Inference.PostAsJsonAsync("v1/models/lin:predict", new { instances = new object[] { s_x[..4], s_x[..3] } }), HttpStatusCode.BadRequest);
    }
}
