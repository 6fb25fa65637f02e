using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Kiln.Runtime;
using Kiln.Serve;
using Kiln.Serve.Archives;
using Kiln.Serve.Benchmarks;

// Kiln.Serve end to end, against the in-process ceiling measured in the same run.
// A real KilnServer starts on 127.0.0.1 ephemeral ports (token authorization on, keys read from its key file); for each
// --batch-size the model is registered through the management API and a closed-loop HTTP load generator runs at each
// --concurrency. The same model called in-process (same session settings and batch size, --workers threads) is the
// ceiling; server req/s / ceiling items/s is the ratio, and server p50 - in-process p50 at concurrency 1 and batch 1 is the
// server's overhead per request. Usage: see BenchOptions.Usage or benchmarks/serve/README.md.
BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message.Length > 0 ? ex.Message + "\n" : "");
    Console.Error.WriteLine(BenchOptions.Usage);
    return 2;
}

string scratch = Path.Combine(Path.GetTempPath(), "kiln-serve-bench-" + Guid.NewGuid().ToString("N")[..12]);
Directory.CreateDirectory(scratch);
try
{
    return await BenchRun.RunAsync(options, scratch);
}
finally
{
    try
    {
        Directory.Delete(scratch, recursive: true);
    }
    catch (IOException)
    {
    }
}

/// <summary>The whole benchmark: model, ceiling, server, load levels, report.</summary>
internal static class BenchRun
{
    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static async Task<int> RunAsync(BenchOptions options, string scratch)
    {
        DeviceCatalog devices = DeviceCatalog.Current;
        string gpus = devices.Gpus.Count == 0 ? "none" : string.Join(", ", devices.Gpus.Select(g => $"{g.TorchName} {g.Name}"));
        string machine = $"{devices.Cpu.Name}, {devices.CpuCores} logical cores; GPU: {gpus}; {RuntimeInformation.FrameworkDescription}";
        Console.WriteLine($"# machine: {machine}; load average at start: {LoadAverage()}");

        using BenchModel model = CreateModel(options, scratch);
        string bodyKind = options.Body ?? (options.Model == "tiny" ? "json" : "npy");
        byte[] body = bodyKind == "json" ? TensorBodies.Json(model.Input, model.InputShape) : TensorBodies.Npy(model.Input, model.InputShape);
        string contentType = bodyKind == "json" ? "application/json" : "application/octet-stream";
        Console.WriteLine($"# model {options.Model}: {model.Description}");
        Console.WriteLine(Invariant($"# request: handler tensor, {bodyKind} body of {body.Length} bytes, shape [{string.Join(",", model.InputShape)}]; server: {options.Workers} workers, token auth on, HTTP/1.1 keep-alive; {options.WarmupSeconds} s warm-up + {options.Seconds} s per measurement"));
        float[] expected = model.RunOnce();

        // The single in-process call at batch 1 on one thread: what a request at concurrency 1 cannot beat.
        CeilingResult single = InProcessCeiling.Measure(1, 1, () => model.CreateCall(1), options.WarmupSeconds, Math.Min(options.Seconds, 3), options.MaxRequests);
        Console.WriteLine(Invariant($"# in-process single call (1 thread, batch 1): p50 {single.CallLatency.P50Us:F1} µs, p99 {single.CallLatency.P99Us:F1} µs, {single.ItemsPerSecond:F0} calls/s"));

        var configs = new List<ConfigResult>();
        bool failed = false;
        int maxConcurrency = options.Concurrency.Max();
        string store = Path.Combine(scratch, "store");
        Directory.CreateDirectory(store);
        var serveOptions = new ServeOptions
        {
            ModelStore = store,
            InferencePort = 0,
            ManagementPort = 0,
            MetricsPort = 0,
            GrpcPort = 0,
            IntraOpThreads = options.IntraOpThreads,
            DefaultWorkersPerModel = options.Workers,
            JobQueueSize = Math.Max(100, 2 * maxConcurrency),
            WorkDirectory = Path.Combine(scratch, "work"),
            KeyFile = Path.Combine(scratch, "keys", "key_file.json"),
            SnapshotDirectory = Path.Combine(scratch, "snapshots"),
            NoConfigSnapshots = true,
        };
        await using (KilnServer server = await KilnServer.StartAsync(serveOptions))
        {
            (string inferenceKey, string managementKey) = ReadKeys(server.KeyFile ?? throw new InvalidOperationException("The server wrote no key file although token authorization is on."));
            using var management = new HttpClient { BaseAddress = server.ManagementAddress, Timeout = TimeSpan.FromMinutes(5) };
            management.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", managementKey);
            using var load = new LoadGenerator(inferenceKey, maxConcurrency);
            Console.WriteLine($"# server: inference {server.InferenceAddress}, management {server.ManagementAddress}");

            foreach (int batch in options.BatchSizes)
            {
                ConfigResult config = await RunConfigAsync(options, model, batch, server, management, load, body, contentType, expected, store);
                configs.Add(config);
                failed |= config.Error is not null;
            }
        }

        // Overhead: server p50 at concurrency 1 with batching off minus the single in-process call's p50 (interleaved measurement).
        double? overheadUs = null;
        if (configs.FirstOrDefault(c => c.BatchSize == 1 && c.Error is null)?.Overhead is { } overhead)
        {
            overheadUs = overhead.P50DifferenceUs;
            Console.WriteLine(Invariant($"# server overhead per request (batch_size 1, concurrency 1, interleaved): {overheadUs:F1} µs (target ≤ 200 µs)"));
        }
        else
        {
            Console.WriteLine("# server overhead: not measured (needs 1 in --batch-size and a working server run)");
        }
        Console.WriteLine($"# load average at the end: {LoadAverage()}");

        if (options.JsonPath is { } jsonPath)
        {
            var result = new RunResult(machine, devices.Cpu.Name, devices.CpuCores, [.. devices.Gpus.Select(g => g.Name)], options.Model, model.Description,
                bodyKind, body.Length, options.Workers, options.IntraOpThreads, options.MaxBatchDelayMs, options.WarmupSeconds, options.Seconds,
                single, overheadUs, configs);
            string? folder = Path.GetDirectoryName(Path.GetFullPath(jsonPath));
            if (folder is not null)
            {
                Directory.CreateDirectory(folder);
            }
            await File.WriteAllTextAsync(jsonPath, JsonSerializer.Serialize(result, s_json));
            Console.WriteLine($"# results written to {jsonPath}");
        }
        return failed ? 1 : 0;
    }

    private static async Task<ConfigResult> RunConfigAsync(BenchOptions options, BenchModel model, int batch, KilnServer server, HttpClient management,
        LoadGenerator load, byte[] body, string contentType, float[] expected, string store)
    {
        int maxConcurrency = options.Concurrency.Max();
        string name = $"{options.Model}_b{batch}";
        string serialized = Path.GetFileName(model.SerializedFile);
        string config = Path.Combine(store, name + "-model-config.yaml");
        await File.WriteAllTextAsync(config, $"deviceType: {model.DeviceType}\n");
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", serialized, "tensor") { ConfigFile = "model-config.yaml" });
        builder.AddFile(model.SerializedFile).AddFile(config, "model-config.yaml");
        string mar = name + ".mar";
        await builder.WriteAsync(Path.Combine(store, mar), force: true);

        string heading = Invariant($"batch_size {batch}, max_batch_delay {options.MaxBatchDelayMs} ms, {options.Workers} workers");
        Console.WriteLine();
        Console.WriteLine($"## {heading}");
        // A model with a fixed batch dimension runs a server batch item by item, so its ceiling is one item a call at any batch_size.
        int perCall = model.StacksBatch ? batch : 1;
        CeilingResult ceiling = InProcessCeiling.Measure(options.Workers, perCall, () => model.CreateCall(perCall), options.WarmupSeconds, options.Seconds, options.MaxRequests);
        long[] stacked = [perCall * model.InputShape[0], .. model.InputShape.Skip(1)];
        string call = model.StacksBatch ? $"one [{string.Join(",", stacked)}] run a call" : $"one [{string.Join(",", stacked)}] run a call: the input's batch dimension is fixed, so the server runs batches item by item";
        Console.WriteLine(Invariant($"ceiling (in-process, {ceiling.Threads} threads, {call}): {ceiling.ItemsPerSecond:F1} items/s, call p50 {ceiling.CallLatency.P50Us:F1} µs"));

        string query = Invariant($"models?url={mar}&batch_size={batch}&max_batch_delay={options.MaxBatchDelayMs}&initial_workers={options.Workers}&synchronous=true&response_timeout=120");
        using (HttpResponseMessage registered = await management.PostAsync(query, null))
        {
            if (!registered.IsSuccessStatusCode)
            {
                string error = $"registering {mar} failed: {(int)registered.StatusCode} {await registered.Content.ReadAsStringAsync()}";
                Console.WriteLine($"server: {error}");
                return new ConfigResult(batch, options.MaxBatchDelayMs, ceiling, null, [], error);
            }
        }
        try
        {
            var url = new Uri(server.InferenceAddress, $"predictions/{name}");
            (int status, string answer) = await load.SendOnceAsync(url, body, contentType, CancellationToken.None);
            double difference = status == 200 ? TensorBodies.RelativeDifference(TensorBodies.ReadFirstOutput(answer), expected) : double.NaN;
            if (status != 200 || !(difference <= model.Tolerance))
            {
                string error = status != 200 ? $"the check request failed: {status} {answer}" : $"the server's answer differs from the in-process one by {difference:G3} (relative)";
                Console.WriteLine($"server: {error}");
                return new ConfigResult(batch, options.MaxBatchDelayMs, ceiling, null, [], error);
            }
            Console.WriteLine(Invariant($"check: the server's answer equals the in-process one (largest relative difference {difference:G3})"));
            // Warm the whole request path (Kestrel, handler, workers; tiered JIT) before the first recorded level.
            await load.RunAsync(url, body, contentType, Math.Min(4, maxConcurrency), 0, Math.Max(1, options.WarmupSeconds), options.MaxRequests, null, CancellationToken.None);
            var levels = new List<LevelResult>();
            foreach (int concurrency in options.Concurrency)
            {
                LevelResult level = await load.RunAsync(url, body, contentType, concurrency, options.WarmupSeconds, options.Seconds, options.MaxRequests, null, CancellationToken.None);
                levels.Add(level);
                Console.Error.WriteLine(Invariant($"  {concurrency} clients: {level.RequestsPerSecond:F1} req/s, p50 {level.Latency.P50Us / 1e3:F3} ms"));
            }
            // The ceiling again after the load: on a shared machine the background changes; the ratio uses the mean of both.
            CeilingResult after = InProcessCeiling.Measure(options.Workers, perCall, () => model.CreateCall(perCall), options.WarmupSeconds, options.Seconds, options.MaxRequests);
            var result = new ConfigResult(batch, options.MaxBatchDelayMs, ceiling, after, levels, null);
            Console.WriteLine(Invariant($"ceiling again after the load: {after.ItemsPerSecond:F1} items/s (call p50 {after.CallLatency.P50Us:F1} µs); ratios below use the mean, {result.CeilingItemsPerSecond:F1} items/s"));
            Console.WriteLine("| clients | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | server / ceiling |");
            Console.WriteLine("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
            foreach (LevelResult level in levels)
            {
                LatencySummary l = level.Latency;
                Console.WriteLine(Invariant($"| {level.Concurrency} | {level.RequestsPerSecond:F1} | {l.P50Us / 1e3:F3} | {l.P90Us / 1e3:F3} | {l.P99Us / 1e3:F3} | {l.MaxUs / 1e3:F3} | {level.Errors} | {level.RequestsPerSecond / result.CeilingItemsPerSecond:F3} |"));
                if (level.FirstError is { } first)
                {
                    Console.WriteLine($"  first error at {level.Concurrency} clients: {first}");
                }
            }
            if (batch == 1)
            {
                result = result with { Overhead = await InterleavedOverheadAsync(options, model, load, url, body, contentType) };
            }
            return result;
        }
        finally
        {
            using HttpResponseMessage removed = await management.DeleteAsync($"models/{name}");
            File.Delete(Path.Combine(store, mar));
        }
    }

    /// <summary>
    /// Server overhead per request, robust to a drifting background load: one client against the server and one
    /// in-process thread, alternating in short slices, each side's latencies pooled over all slices; p50 minus p50.
    /// </summary>
    private static async Task<OverheadResult> InterleavedOverheadAsync(BenchOptions options, BenchModel model, LoadGenerator load, Uri url, byte[] body, string contentType)
    {
        const int Rounds = 10;
        double slice = Math.Max(0.2, options.Seconds / Rounds);
        var server = new List<long>();
        var local = new List<long>();
        for (int round = 0; round < Rounds; round++)
        {
            InProcessCeiling.Measure(1, 1, () => model.CreateCall(1), 0, slice, options.MaxRequests, local);
            await load.RunAsync(url, body, contentType, 1, 0, slice, options.MaxRequests, server, CancellationToken.None);
        }
        LatencySummary serverLatency = LatencySummary.FromTicks([server]);
        LatencySummary localLatency = LatencySummary.FromTicks([local]);
        var overhead = new OverheadResult(Rounds, slice, serverLatency, localLatency, serverLatency.P50Us - localLatency.P50Us);
        Console.WriteLine(Invariant($"overhead, interleaved ({Rounds} rounds of {slice:F2} s each side, concurrency 1): server p50 {serverLatency.P50Us:F1} µs ({serverLatency.Count} requests) - in-process p50 {localLatency.P50Us:F1} µs ({localLatency.Count} calls) = {overhead.P50DifferenceUs:F1} µs"));
        return overhead;
    }

    private static BenchModel CreateModel(BenchOptions options, string scratch)
    {
        switch (options.Model)
        {
            case "tiny":
            {
                string path = Path.Combine(scratch, "tiny_linear.onnx");
                File.WriteAllBytes(path, TinyLinearModel.Build());
                float[] input = [0.5f, -1.25f, 2f, 0.75f];
                var model = new OnnxBenchModel(path, "tiny linear Y[N,3] = X[N,4]·W + B", input, [1, TinyLinearModel.Inputs], options.IntraOpThreads);
                float[] check = model.RunOnce();
                if (TensorBodies.RelativeDifference(check, TinyLinearModel.Expected(input)) > 1e-5)
                {
                    model.Dispose();
                    throw new InvalidOperationException("The hand-written tiny ONNX model does not compute X·W + B.");
                }
                return model;
            }
            case "resnet18":
            {
                string path = options.OnnxPath ?? Path.Combine(AppContext.BaseDirectory, "models", "ResNet18.onnx");
                if (!File.Exists(path))
                {
                    throw new FileNotFoundException($"{path} does not exist; build the benchmark (it copies ResNet18.onnx from the Microsoft.ML.DnnImageFeaturizer.ResNet18 package) or pass --onnx PATH.", path);
                }
                var random = new Random(11);
                float[] input = [.. Enumerable.Range(0, 3 * 224 * 224).Select(_ => (float)(random.NextDouble() * 255) - 128)];
                return new OnnxBenchModel(path, "ResNet-18", input, [1, 3, 224, 224], options.IntraOpThreads);
            }
            default:
                return new TorchScriptBenchModel(options.PtPath!, options.InputShape, options.Device, options.IntraOpThreads);
        }
    }

    private static (string Inference, string Management) ReadKeys(string keyFile)
    {
        using JsonDocument keys = JsonDocument.Parse(File.ReadAllText(keyFile));
        return (keys.RootElement.GetProperty("inference").GetProperty("key").GetString()!,
            keys.RootElement.GetProperty("management").GetProperty("key").GetString()!);
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}

/// <summary>One server configuration (batch size) and its measurements; the ceiling is measured before and after the load.</summary>
internal sealed record ConfigResult(int BatchSize, int MaxBatchDelayMs, CeilingResult Ceiling, CeilingResult? CeilingAfter, IReadOnlyList<LevelResult> Levels, string? Error)
{
    /// <summary>Server overhead per request at concurrency 1 (batch_size 1 only).</summary>
    public OverheadResult? Overhead { get; init; }

    /// <summary>The mean of the two ceiling measurements (the first alone when the second is missing).</summary>
    public double CeilingItemsPerSecond => CeilingAfter is { } after ? (Ceiling.ItemsPerSecond + after.ItemsPerSecond) / 2 : Ceiling.ItemsPerSecond;

    /// <summary>Server req/s over <see cref="CeilingItemsPerSecond"/>, per concurrency level.</summary>
    public IReadOnlyList<double> ServerOverCeiling => [.. Levels.Select(l => l.RequestsPerSecond / CeilingItemsPerSecond)];
}

/// <summary>Server p50 at concurrency 1 minus the in-process call's p50, both pooled over interleaved slices.</summary>
internal sealed record OverheadResult(int Rounds, double SliceSeconds, LatencySummary Server, LatencySummary InProcess, double P50DifferenceUs);

/// <summary>Everything --json writes.</summary>
internal sealed record RunResult(
    string Machine, string Cpu, int CpuCores, IReadOnlyList<string> Gpus, string Model, string ModelDescription, string Body, int BodyBytes,
    int Workers, int IntraOpThreads, int MaxBatchDelayMs, double WarmupSeconds, double Seconds, CeilingResult InProcessSingleCall,
    double? ServerOverheadUs, IReadOnlyList<ConfigResult> Configs);
