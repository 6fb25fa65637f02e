using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Kiln.Serve.Tests;

public sealed class AuthTests
{
    [Fact]
    public async Task KeyFileIsOwnerOnlyAndHoldsTwoDistinctKeys()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string keyFile = harness.Server.KeyFile!;
        File.Exists(keyFile).ShouldBeTrue();
        if (!OperatingSystem.IsWindows())
        {
            File.GetUnixFileMode(keyFile).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        harness.InferenceKey.ShouldNotBeNullOrWhiteSpace();
        harness.ManagementKey.ShouldNotBeNullOrWhiteSpace();
        harness.InferenceKey.ShouldNotBe(harness.ManagementKey);
        harness.InferenceKey!.ShouldAllBe(c => char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_');
        await harness.Server.StopAsync();
        File.Exists(keyFile).ShouldBeFalse();
    }

    [Fact]
    public async Task MissingTokenIs401WithChallenge()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await harness.LinearArchiveAsync("lin");
        await harness.RegisterAsync(mar);
        using var bare = new HttpClient { BaseAddress = harness.Server.ManagementAddress };
        using HttpResponseMessage list = await bare.GetAsync("models");
        await ServerHarness.ShouldBeErrorAsync(list, 401, "InvalidKeyException");
        list.Headers.WwwAuthenticate.ShouldContain(h => h.Scheme == "Bearer");

        using var bareInference = new HttpClient { BaseAddress = harness.Server.InferenceAddress };
        using HttpResponseMessage predict = await bareInference.PostAsync("predictions/lin", new StringContent("{}"));
        await ServerHarness.ShouldBeErrorAsync(predict, 401, "InvalidKeyException");
    }

    [Fact]
    public async Task WrongKeyIs403AndKeysAreNotInterchangeable()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using var client = new HttpClient { BaseAddress = harness.Server.ManagementAddress };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "not-the-key");
        using HttpResponseMessage wrong = await client.GetAsync("models");
        await ServerHarness.ShouldBeErrorAsync(wrong, 403, "InvalidKeyException");

        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", harness.InferenceKey);
        using HttpResponseMessage inferenceKey = await client.GetAsync("models");
        await ServerHarness.ShouldBeErrorAsync(inferenceKey, 403, "InvalidKeyException");

        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", harness.ManagementKey);
        using HttpResponseMessage right = await client.GetAsync("models");
        right.StatusCode.ShouldBe(HttpStatusCode.OK);
    }

    [Fact]
    public async Task PingNeedsNoToken()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using var bare = new HttpClient { BaseAddress = harness.Server.InferenceAddress };
        using HttpResponseMessage ping = await bare.GetAsync("ping");
        ping.StatusCode.ShouldBe(HttpStatusCode.OK);
        using JsonDocument json = JsonDocument.Parse(await ping.Content.ReadAsStringAsync());
        json.RootElement.GetProperty("status").GetString().ShouldBe("Healthy");
    }

    [Fact]
    public async Task DisabledNeedsNoTokenAndWritesNoKeyFile()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o.DisableTokenAuthorization = true);
        harness.Server.KeyFile.ShouldBeNull();
        harness.InferenceKey.ShouldBeNull();
        Directory.Exists(Path.Combine(harness.Store, "keys")).ShouldBeFalse();
        string mar = await harness.LinearArchiveAsync("lin");
        await harness.RegisterAsync(mar);
        float[] y = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", new float[TinyOnnx.Inputs]);
        y.Length.ShouldBe(TinyOnnx.Outputs);
    }
}
