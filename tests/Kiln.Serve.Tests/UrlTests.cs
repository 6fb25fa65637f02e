using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Kiln.Serve.Tests;

public sealed class UrlTests
{
    [Theory]
    [InlineData("http://127.0.0.1:9/evil.mar")]
    [InlineData("https://example.invalid/m.mar")]
    [InlineData("file:///etc/passwd")]
    public async Task UrlsAreRefusedByDefaultNamingTheUrl(string url)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString(url)}&synchronous=true", null);
        var body = await ServerHarness.ShouldBeErrorAsync(response, 400, "DownloadArchiveException");
        body.GetProperty("message").GetString()!.ShouldContain(url);
        body.GetProperty("message").GetString()!.ShouldContain("allowed");
    }

    [Fact]
    public async Task UrlNotMatchingConfiguredPatternIsRefusedAndMatchingOneGetsPastThePolicy()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => { o.AllowedUrls.Add(@"https://models\.example\.invalid/.*"); o.AllowedUrls.Add("file:///models/.*"); });
        using HttpResponseMessage refused = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString("https://evil.example.invalid/models.example.invalid/m.mar")}", null);
        (await ServerHarness.ShouldBeErrorAsync(refused, 400, "DownloadArchiveException")).GetProperty("message").GetString()!.ShouldContain("evil.example.invalid");

        // Allowed by the policy: a file:// URL gets past it and the registry refuses it with its own error.
        using HttpResponseMessage allowed = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString("file:///models/m.mar")}", null);
        string message = (await ServerHarness.ShouldBeErrorAsync(allowed, 400, "DownloadArchiveException")).GetProperty("message").GetString()!;
        message.ShouldNotContain("allowed URL");
    }

    private static async Task<WebApplication> FileServerAsync(byte[] archive)
    {
        WebApplicationBuilder builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.AddRoutingCore();
        builder.WebHost.UseKestrelCore();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        WebApplication app = builder.Build();
        app.UseRouting();
        app.MapGet("/files/{name}", context => context.Response.Body.WriteAsync(archive).AsTask());
        await app.StartAsync();
        return app;
    }

    [Fact]
    public async Task AllowedHttpArchiveIsDownloadedRegisteredAndServed()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o.AllowedUrls.Add(@"http://127\.0\.0\.1:\d+/files/.*"));
        string mar = await harness.LinearArchiveAsync("remote");
        byte[] archive = await File.ReadAllBytesAsync(Path.Combine(harness.Store, mar));
        File.Delete(Path.Combine(harness.Store, mar));
        await using WebApplication files = await FileServerAsync(archive);
        string address = files.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        await harness.RegisterAsync(Uri.EscapeDataString($"{address}/files/dl.mar"));
        File.Exists(Path.Combine(harness.Store, "dl.mar")).ShouldBeTrue();
        float[] y = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/remote", new float[TinyOnnx.Inputs]);
        y.Length.ShouldBe(TinyOnnx.Outputs);
    }

    [Fact]
    public async Task AllowedHttpArchiveOverTheSizeLimitIs413()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync(o =>
        {
            o.AllowedUrls.Add(@"http://127\.0\.0\.1:\d+/files/.*");
            o.MaxArchiveSize = 1000;
        });
        await using WebApplication files = await FileServerAsync(new byte[5000]);
        string address = files.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString($"{address}/files/big.mar")}&synchronous=true", null);
        await ServerHarness.ShouldBeErrorAsync(response, 413, "RequestEntityTooLargeException");
        File.Exists(Path.Combine(harness.Store, "big.mar")).ShouldBeFalse();
        Directory.GetFiles(harness.Store, "*.download").ShouldBeEmpty();
    }

    [Fact]
    public async Task StoreFileNamesStayAllowed()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await harness.LinearArchiveAsync("lin");
        await harness.RegisterAsync(mar);
    }
}
