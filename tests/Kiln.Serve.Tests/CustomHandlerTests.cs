using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Runtime.Loader;
using System.Text;
using System.Text.Json;
using Kiln.Serve.Archives;

namespace Kiln.Serve.Tests;

/// <summary>
/// Custom C# handlers shipped inside the .mar: the fixture Kiln.Serve.Tests.CustomHandler.dll (built by its own project,
/// copied into custom-handler/ so that it never enters the default load context) registered over HTTP on the real server.
/// </summary>
public sealed class CustomHandlerTests
{
    private const string FixtureFile = "Kiln.Serve.Tests.CustomHandler.dll";
    private const string FixtureClass = "Kiln.Serve.Tests.CustomHandler.TextHandler";
    private static readonly string s_fixture = Path.Combine(AppContext.BaseDirectory, "custom-handler", FixtureFile);

    [Fact]
    public async Task Predict_PlainDllHandler_AnswersWithHandlerOutput()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "upper", FixtureFile, "mode: upper\nprefix: >\n");
        await harness.RegisterAsync(mar);

        using HttpResponseMessage response = await PredictAsync(harness, "upper", "hello");

        JsonElement json = await OkJsonAsync(response);
        response.Content.Headers.ContentType?.MediaType.ShouldBe("application/json");
        json.GetProperty("text").GetString().ShouldBe(">HELLO");
        json.GetProperty("model").GetString().ShouldBe("upper");
        json.GetProperty("contentType").GetString().ShouldBe("text/plain; charset=utf-8");
        AssemblyLoadContext.Default.Assemblies.ShouldNotContain(a => a.GetName().Name == "Kiln.Serve.Tests.CustomHandler");
    }

    [Fact]
    public async Task Predict_NamedClassRunningOnnxSession_MatchesModelArithmeticInBatches()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "linear", $"{FixtureFile}:{FixtureClass}", "mode: linear\n");
        await harness.RegisterAsync(mar, "initial_workers=2&batch_size=4&max_batch_delay=200");
        float[][] inputs = [.. Enumerable.Range(0, 8).Select(r => Enumerable.Range(0, TinyOnnx.Inputs).Select(i => (r * 0.5f) - i).ToArray())];

        string[] bodies = await Task.WhenAll(inputs.Select(async x =>
        {
            using HttpResponseMessage response = await PredictAsync(harness, "linear", string.Join(",", x.Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
            string body = await response.Content.ReadAsStringAsync();
            response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
            response.Content.Headers.ContentType?.ToString().ShouldBe("text/plain; charset=utf-8");
            return body;
        }));

        for (int r = 0; r < inputs.Length; r++)
        {
            float[] y = [.. bodies[r].Split(',').Select(v => float.Parse(v, CultureInfo.InvariantCulture))];
            y.Length.ShouldBe(TinyOnnx.Outputs);
            float[] expected = TinyOnnx.Expected(inputs[r], 1f);
            for (int o = 0; o < y.Length; o++)
            {
                y[o].ShouldBe(expected[o], 1e-4f);
            }
        }
    }

    [Fact]
    public async Task Predict_HandlerShippedWithDepsJson_LoadsThroughItsResolver()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "withdeps", FixtureFile, "mode: linear\n", [s_fixture, Path.ChangeExtension(s_fixture, ".deps.json")]);
        await harness.RegisterAsync(mar);

        using HttpResponseMessage response = await PredictAsync(harness, "withdeps", "1,0,0,0");

        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        body.Split(',').Length.ShouldBe(TinyOnnx.Outputs);
    }

    [Fact]
    public async Task Predict_ConcurrentRequests_HandlerSeesBatchesLargerThanOne()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "batched", FixtureFile);
        await harness.RegisterAsync(mar, "initial_workers=1&batch_size=4&max_batch_delay=300");

        JsonElement[] answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(async i =>
        {
            using HttpResponseMessage response = await PredictAsync(harness, "batched", $"item{i}");
            return await OkJsonAsync(response);
        }));

        for (int i = 0; i < answers.Length; i++)
        {
            answers[i].GetProperty("text").GetString().ShouldBe($"ITEM{i}");
            answers[i].GetProperty("batch").GetInt32().ShouldBeInRange(1, 4);
        }
        answers.Max(a => a.GetProperty("batch").GetInt32()).ShouldBeGreaterThan(1);
    }

    [Fact]
    public async Task Predict_OneRequestFailsInItsBatch_OnlyThatRequestGetsItsStatus()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "partial", FixtureFile);
        await harness.RegisterAsync(mar, "initial_workers=1&batch_size=4&max_batch_delay=1000");
        string[] bodies = ["first", "fail-early", "fail-late", "last"];

        HttpResponseMessage[] responses = await Task.WhenAll(bodies.Select(body => PredictAsync(harness, "partial", body)));

        try
        {
            JsonElement first = await OkJsonAsync(responses[0]);
            first.GetProperty("text").GetString().ShouldBe("FIRST");
            first.GetProperty("batch").GetInt32().ShouldBeGreaterThan(1); // it shared its batch with at least one failing request
            (await OkJsonAsync(responses[3])).GetProperty("text").GetString().ShouldBe("LAST");
            JsonElement early = await ServerHarness.ShouldBeErrorAsync(responses[1], 422, "BadRequestException");
            early.GetProperty("message").GetString()!.ShouldContain("preprocess");
            JsonElement late = await ServerHarness.ShouldBeErrorAsync(responses[2], 409, "BadRequestException");
            late.GetProperty("message").GetString()!.ShouldContain("postprocess");
        }
        finally
        {
            foreach (HttpResponseMessage response in responses)
            {
                response.Dispose();
            }
        }
    }

    [Fact]
    public async Task Predict_HandlerThrowsUnexpectedly_BatchGets503AndModelKeepsServing()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "crashy", FixtureFile);
        await harness.RegisterAsync(mar);

        using (HttpResponseMessage crashed = await PredictAsync(harness, "crashy", "crash"))
        {
            JsonElement error = await ServerHarness.ShouldBeErrorAsync(crashed, 503, "InternalServerException");
            error.GetProperty("message").GetString().ShouldBe("Prediction failed");
        }
        using HttpResponseMessage after = await PredictAsync(harness, "crashy", "still here");
        (await OkJsonAsync(after)).GetProperty("text").GetString().ShouldBe("STILL HERE");
    }

    [Fact]
    public async Task Register_TwoVersionsOfOneHandler_EachGetsItsOwnLoadContext()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "iso", FixtureFile, version: "1.0"));
        await harness.RegisterAsync(await ArchiveAsync(harness, "iso", FixtureFile, version: "2.0"));

        using HttpResponseMessage first = await harness.Inference.PostAsync("predictions/iso/1.0", new StringContent("one"));
        using HttpResponseMessage second = await harness.Inference.PostAsync("predictions/iso/2.0", new StringContent("two"));

        (await OkJsonAsync(first)).GetProperty("instances").GetInt32().ShouldBe(1);
        (await OkJsonAsync(second)).GetProperty("instances").GetInt32().ShouldBe(1); // the static counter is not shared
        WeakContexts("iso").Length.ShouldBe(2);
    }

    [Fact]
    public async Task Register_AssemblyNotInArchive_400NamingIt()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "missing", "Missing.Handler.dll");

        JsonElement error = await RegisterErrorAsync(harness, mar);

        error.GetProperty("message").GetString()!.ShouldContain("Missing.Handler.dll is not in the archive");
    }

    [Theory]
    [InlineData("../Kiln.Serve.Tests.CustomHandler.dll")]
    [InlineData("sub/Kiln.Serve.Tests.CustomHandler.dll")]
    [InlineData("Kiln.Serve.Tests.CustomHandler.dll:")]
    public async Task Register_HandlerNameWithFolder_400(string handler)
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "pathy", handler);

        JsonElement error = await RegisterErrorAsync(harness, mar);

        error.GetProperty("message").GetString()!.ShouldContain("without folders or '..'");
    }

    [Fact]
    public async Task Register_AssemblyWithoutHandlerType_400()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "nohandler", "Shouldly.dll", extraFiles: [Path.Combine(AppContext.BaseDirectory, "Shouldly.dll")]);

        JsonElement error = await RegisterErrorAsync(harness, mar);

        error.GetProperty("message").GetString()!.ShouldContain("Shouldly.dll has no public non-abstract class implementing Kiln.Serve.Handlers.IInferenceHandler");
    }

    [Fact]
    public async Task Register_NamedTypeIsNotAHandler_400ListingCandidates()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "wrongtype", $"{FixtureFile}:Kiln.Serve.Tests.CustomHandler.NotAHandler");

        JsonElement error = await RegisterErrorAsync(harness, mar);

        string message = error.GetProperty("message").GetString()!;
        message.ShouldContain("Kiln.Serve.Tests.CustomHandler.NotAHandler");
        message.ShouldContain(FixtureClass);
    }

    [Fact]
    public async Task Register_InitializeThrows_400WithItsMessageAndContextUnloaded()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "failinit", FixtureFile, "mode: fail-init\n");

        JsonElement error = await RegisterErrorAsync(harness, mar);

        error.GetProperty("message").GetString()!.ShouldContain("Initialize threw InvalidOperationException: mode fail-init asks Initialize to fail");
        await ShouldBeUnloadedAsync(WeakContexts("failinit"));
    }

    [Fact]
    public async Task Unregister_UnloadsTheHandlersLoadContext()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string mar = await ArchiveAsync(harness, "unload", FixtureFile, "mode: linear\n");
        await harness.RegisterAsync(mar, "initial_workers=2");
        using (HttpResponseMessage response = await PredictAsync(harness, "unload", "1,2,3,4"))
        {
            response.StatusCode.ShouldBe(HttpStatusCode.OK, await response.Content.ReadAsStringAsync());
        }
        WeakReference[] contexts = WeakContexts("unload");
        contexts.Length.ShouldBe(1);
        contexts[0].IsAlive.ShouldBeTrue();

        using (HttpResponseMessage deleted = await harness.Management.DeleteAsync("models/unload"))
        {
            deleted.StatusCode.ShouldBe(HttpStatusCode.OK, await deleted.Content.ReadAsStringAsync());
        }

        await ShouldBeUnloadedAsync(contexts);
    }

    private static async Task<string> ArchiveAsync(ServerHarness harness, string name, string handler, string? modelConfig = null, string[]? extraFiles = null, string version = "1.0")
    {
        string folder = Path.Combine(harness.Store, "src-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        string model = Path.Combine(folder, "linear.onnx");
        await File.WriteAllBytesAsync(model, TinyOnnx.Linear(1f));
        var builder = new ModelArchiveBuilder(new ModelManifest(name, version, "linear.onnx", handler) { ConfigFile = modelConfig is null ? null : "model-config.yaml" });
        builder.AddFile(model);
        foreach (string file in extraFiles ?? [s_fixture])
        {
            builder.AddFile(file);
        }
        if (modelConfig is not null)
        {
            string config = Path.Combine(folder, "model-config.yaml");
            await File.WriteAllTextAsync(config, modelConfig);
            builder.AddFile(config);
        }
        string mar = $"{name}-{version}.mar";
        await builder.WriteAsync(Path.Combine(harness.Store, mar));
        return mar;
    }

    private static Task<HttpResponseMessage> PredictAsync(ServerHarness harness, string model, string text) =>
        harness.Inference.PostAsync($"predictions/{model}", new StringContent(text, Encoding.UTF8, "text/plain"));

    private static async Task<JsonElement> OkJsonAsync(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        return json.RootElement.Clone();
    }

    private static async Task<JsonElement> RegisterErrorAsync(ServerHarness harness, string mar)
    {
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={mar}&synchronous=true&initial_workers=1", null);
        return await ServerHarness.ShouldBeErrorAsync(response, 400, "ModelException");
    }

    /// <summary>Weak references to the live handler load contexts of a model (no strong reference stays on this frame).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference[] WeakContexts(string model) =>
        [.. AssemblyLoadContext.All.Where(c => c.Name?.StartsWith($"kiln-handler:{model}:", StringComparison.Ordinal) == true).Select(c => new WeakReference(c))];

    private static async Task ShouldBeUnloadedAsync(WeakReference[] contexts)
    {
        for (int attempt = 0; attempt < 100 && contexts.Any(c => c.IsAlive); attempt++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            await Task.Delay(20);
        }
        contexts.ShouldAllBe(c => !c.IsAlive);
    }
}
