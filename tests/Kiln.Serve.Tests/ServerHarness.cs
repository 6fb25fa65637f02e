using System.Net.Http.Json;
using System.Text.Json;
using Kiln.Serve.Archives;

namespace Kiln.Serve.Tests;

/// <summary>A real Kiln.Serve on 127.0.0.1 ephemeral ports, a model store in a temp folder and clients for both APIs.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    public static readonly string Models = Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
    public static readonly string Preprocess = Path.Combine(Models, "ResNetPrepOnnx", "ResNetPreprocess.onnx");
    public static readonly string ResNet = Path.Combine(Models, "ResNet18Onnx", "ResNet18.onnx");

    private ServerHarness(string store, KilnServer server)
    {
        Store = store;
        Server = server;
        Inference = new HttpClient { BaseAddress = server.InferenceAddress, Timeout = TimeSpan.FromSeconds(60) };
        Management = new HttpClient { BaseAddress = server.ManagementAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (server.KeyFile is { } keyFile)
        {
            using JsonDocument keys = JsonDocument.Parse(File.ReadAllText(keyFile));
            InferenceKey = keys.RootElement.GetProperty("inference").GetProperty("key").GetString()!;
            ManagementKey = keys.RootElement.GetProperty("management").GetProperty("key").GetString()!;
            Inference.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", InferenceKey);
            Management.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", ManagementKey);
        }
    }

    /// <summary>The inference key read from the server's key file; null when token authorization is disabled.</summary>
    public string? InferenceKey { get; }

    /// <summary>The management key read from the server's key file; null when token authorization is disabled.</summary>
    public string? ManagementKey { get; }

    public string Store { get; }

    public KilnServer Server { get; }

    public HttpClient Inference { get; }

    public HttpClient Management { get; }

    public static async Task<ServerHarness> StartAsync(Action<ServeOptions>? configure = null, string? store = null, Microsoft.Extensions.Logging.ILoggerFactory? loggerFactory = null)
    {
        store ??= Path.Combine(Path.GetTempPath(), "kiln-serve-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(store);
        var options = new ServeOptions
        {
            ModelStore = store,
            InferencePort = 0,
            ManagementPort = 0,
            MetricsPort = 0,
            GrpcPort = 0,
            IntraOpThreads = 1,
            UnregisterTimeoutSeconds = 30,
            KeyFile = Path.Combine(store, "keys", "key_file.json"),
            SnapshotDirectory = Path.Combine(store, "snapshots"),
        };
        configure?.Invoke(options);
        KilnServer server = await KilnServer.StartAsync(options, loggerFactory);
        return new ServerHarness(store, server);
    }

    /// <summary>Writes a .mar of the tiny linear model (scaled weights) into the store.</summary>
    public async Task<string> LinearArchiveAsync(string name, string version = "1.0", float scale = 1f, string? modelConfig = null)
    {
        string folder = Path.Combine(Store, "src-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        string model = Path.Combine(folder, "linear.onnx");
        await File.WriteAllBytesAsync(model, TinyOnnx.Linear(scale));
        var builder = new ModelArchiveBuilder(new ModelManifest(name, version, "linear.onnx", "tensor") { ConfigFile = modelConfig is null ? null : "model-config.yaml" });
        builder.AddFile(model);
        if (modelConfig is not null)
        {
            string config = Path.Combine(folder, "model-config.yaml");
            await File.WriteAllTextAsync(config, modelConfig);
            builder.AddFile(config);
        }
        string mar = $"{name}-{version}.mar";
        await builder.WriteAsync(Path.Combine(Store, mar));
        return mar;
    }

    public async Task<string> ResNetArchiveAsync(string name, string? modelConfig = null)
    {
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", "ResNet18.onnx", "image_embedder") { ConfigFile = modelConfig is null ? null : "model-config.yaml" });
        builder.AddFile(ResNet).AddFile(Preprocess, "preprocess.onnx");
        if (modelConfig is not null)
        {
            string config = Path.Combine(Store, name + "-config.yaml");
            await File.WriteAllTextAsync(config, modelConfig);
            builder.AddFile(config, "model-config.yaml");
        }
        string mar = name + ".mar";
        await builder.WriteAsync(Path.Combine(Store, mar));
        return mar;
    }

    public async Task RegisterAsync(string mar, string query = "initial_workers=1")
    {
        using HttpResponseMessage response = await Management.PostAsync($"models?url={mar}&synchronous=true&{query}", null);
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(System.Net.HttpStatusCode.OK, body);
    }

    public static async Task<float[]> PredictTensorAsync(HttpClient client, string path, float[] x)
    {
        using HttpResponseMessage response = await client.PostAsJsonAsync(path, new { data = x, shape = new[] { x.Length / TinyOnnx.Inputs, TinyOnnx.Inputs } });
        string body = await response.Content.ReadAsStringAsync();
        response.IsSuccessStatusCode.ShouldBeTrue(body);
        using JsonDocument json = JsonDocument.Parse(body);
        json.RootElement.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ShouldBe([x.Length / TinyOnnx.Inputs, TinyOnnx.Outputs]);
        return [.. json.RootElement.GetProperty("data").EnumerateArray().Select(v => v.GetSingle())];
    }

    /// <summary>Asserts TorchServe's error body and returns it.</summary>
    public static async Task<JsonElement> ShouldBeErrorAsync(HttpResponseMessage response, int code, string type)
    {
        string body = await response.Content.ReadAsStringAsync();
        ((int)response.StatusCode).ShouldBe(code, body);
        response.Content.Headers.ContentType?.MediaType.ShouldBe("application/json");
        using JsonDocument json = JsonDocument.Parse(body);
        json.RootElement.GetProperty("code").GetInt32().ShouldBe(code);
        json.RootElement.GetProperty("type").GetString().ShouldBe(type);
        json.RootElement.GetProperty("message").GetString().ShouldNotBeNullOrWhiteSpace();
        return json.RootElement.Clone();
    }

    public async ValueTask DisposeAsync()
    {
        Inference.Dispose();
        Management.Dispose();
        await Server.DisposeAsync();
        try
        {
            Directory.Delete(Store, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
