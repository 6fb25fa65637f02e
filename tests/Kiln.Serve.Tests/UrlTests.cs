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
        await using ServerHarness harness = await ServerHarness.StartAsync(o => o.AllowedUrls.Add(@"https://models\.example\.invalid/.*"));
        using HttpResponseMessage refused = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString("https://evil.example.invalid/models.example.invalid/m.mar")}", null);
        (await ServerHarness.ShouldBeErrorAsync(refused, 400, "DownloadArchiveException")).GetProperty("message").GetString()!.ShouldContain("evil.example.invalid");

        // Allowed by the policy; downloading is not implemented, so the registry refuses it with its own error.
        using HttpResponseMessage allowed = await harness.Management.PostAsync($"models?url={Uri.EscapeDataString("https://models.example.invalid/m.mar")}", null);
        string message = (await ServerHarness.ShouldBeErrorAsync(allowed, 400, "DownloadArchiveException")).GetProperty("message").GetString()!;
        message.ShouldContain("remote");
        message.ShouldNotContain("allowed URL");
    }

    [Fact]
    public async Task StoreFileNamesStayAllowed()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await harness.LinearArchiveAsync("lin");
        await harness.RegisterAsync(mar);
    }
}
