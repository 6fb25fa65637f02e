using Kiln.Serve.Inference;
using Kiln.Serve.Security;
using Kiln.Serve.Snapshots;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Hosting;

/// <summary>TorchServe's management API: register, list, describe, scale, unregister, set-default.</summary>
internal sealed class ManagementApi(ModelRegistry registry, ILogger logger, UrlPolicy urls, SnapshotStore? snapshots)
{
    private const string Processing = "Processing worker updates...";

    public void Map(IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPost("/models", context => HttpIo.GuardAsync(context, logger, RegisterAsync));
        endpoints.MapGet("/models", context => HttpIo.GuardAsync(context, logger, ListAsync));
        endpoints.MapGet("/models/{model}", context => HttpIo.GuardAsync(context, logger, DescribeAsync));
        endpoints.MapGet("/models/{model}/{version}", context => HttpIo.GuardAsync(context, logger, DescribeAsync));
        endpoints.MapPut("/models/{model}", context => HttpIo.GuardAsync(context, logger, ScaleAsync));
        endpoints.MapPut("/models/{model}/{version}", context => HttpIo.GuardAsync(context, logger, ScaleAsync));
        endpoints.MapDelete("/models/{model}", context => HttpIo.GuardAsync(context, logger, UnregisterAsync));
        endpoints.MapDelete("/models/{model}/{version}", context => HttpIo.GuardAsync(context, logger, UnregisterAsync));
        endpoints.MapPut("/models/{model}/{version}/set-default", context => HttpIo.GuardAsync(context, logger, SetDefaultAsync));
        endpoints.MapPut("/models/{model}/{version}/canary", context => HttpIo.GuardAsync(context, logger, SetCanaryAsync));
    }

    private async Task RegisterAsync(HttpContext context)
    {
        HttpRequest request = context.Request;
        string? url = request.Query["url"];
        if (string.IsNullOrEmpty(url))
        {
            throw ServeException.BadRequest("Parameter url is required.");
        }
        urls.Check(url);
        if (ArchiveDownloader.IsHttp(url))
        {
            url = await ArchiveDownloader.DownloadAsync(url, urls.ModelStore, urls.MaxArchiveSize, context.RequestAborted).ConfigureAwait(false);
        }
        var register = new RegisterRequest(url)
        {
            ModelName = request.Query["model_name"],
            Handler = string.IsNullOrEmpty(request.Query["handler"]) ? null : request.Query["handler"].ToString(),
            BatchSize = HttpIo.QueryInt(request, "batch_size"),
            MaxBatchDelayMs = HttpIo.QueryInt(request, "max_batch_delay"),
            InitialWorkers = HttpIo.QueryInt(request, "initial_workers"),
            ResponseTimeoutSeconds = HttpIo.QueryInt(request, "response_timeout"),
            PreferredBatchSizes = ModelRegistry.ParseSizes(string.IsNullOrEmpty(request.Query["preferred_batch_size"]) ? null : request.Query["preferred_batch_size"].ToString(), "Parameter preferred_batch_size"),
            MaxQueueDelayMicroseconds = HttpIo.QueryInt(request, "max_queue_delay_microseconds"),
        };
        bool synchronous = HttpIo.QueryBool(request, "synchronous");
        ModelVersionHost host = await registry.RegisterAsync(register, context.RequestAborted).ConfigureAwait(false);
        snapshots?.Write();
        if (!synchronous)
        {
            await HttpIo.WriteStatusAsync(context, 202, Processing).ConfigureAwait(false);
            return;
        }
        int workers = host.WorkerCount;
        string status = $"Model \"{host.Name}\" Version: {host.Version} registered with {workers} initial workers";
        if (workers == 0)
        {
            status += ". Use scale workers API to add workers for the model.";
        }
        await HttpIo.WriteStatusAsync(context, 200, status).ConfigureAwait(false);
    }

    private Task ListAsync(HttpContext context)
    {
        int limit = HttpIo.QueryInt(context.Request, "limit") ?? 100;
        int start = HttpIo.QueryInt(context.Request, "next_page_token") ?? 0;
        if (limit < 1 || start < 0)
        {
            throw ServeException.BadRequest("limit must be at least 1 and next_page_token at least 0.");
        }
        (IReadOnlyList<(string Name, string Url)> page, int? next) = registry.List(start, Math.Min(limit, 1000));
        return HttpIo.WriteJsonAsync(context, 200, writer =>
        {
            if (next is { } token)
            {
                writer.WriteString("nextPageToken", token.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            writer.WriteStartArray("models");
            foreach ((string name, string url) in page)
            {
                writer.WriteStartObject();
                writer.WriteString("modelName", name);
                writer.WriteString("modelUrl", url);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        });
    }

    private Task DescribeAsync(HttpContext context)
    {
        IReadOnlyList<ModelVersionHost> hosts = registry.Describe(HttpIo.RouteString(context, "model")!, HttpIo.RouteString(context, "version"));
        byte[] json = HttpIo.Json(writer =>
        {
            writer.WriteStartArray();
            foreach (ModelVersionHost host in hosts)
            {
                ModelSettings settings = host.Settings;
                writer.WriteStartObject();
                writer.WriteString("modelName", host.Name);
                writer.WriteString("modelVersion", host.Version);
                writer.WriteString("modelUrl", host.Url);
                writer.WriteString("runtime", host.Archive.Manifest.Runtime);
                writer.WriteString("handler", host.Archive.Manifest.Handler);
                writer.WriteNumber("minWorkers", settings.MinWorkers);
                writer.WriteNumber("maxWorkers", settings.MaxWorkers);
                writer.WriteNumber("batchSize", settings.BatchSize);
                writer.WriteNumber("maxBatchDelay", settings.MaxBatchDelayMs);
                if (settings.PreferredBatchSizes.Count > 0)
                {
                    writer.WriteStartArray("preferredBatchSizes");
                    foreach (int size in settings.PreferredBatchSizes)
                    {
                        writer.WriteNumberValue(size);
                    }
                    writer.WriteEndArray();
                }
                if (settings.MaxQueueDelayMicroseconds is { } queueDelay)
                {
                    writer.WriteNumber("maxQueueDelayMicroseconds", queueDelay);
                }
                writer.WriteBoolean("loadedAtStartup", false);
                writer.WriteNumber("responseTimeout", settings.ResponseTimeoutSeconds);
                writer.WriteBoolean("isDefault", registry.IsDefault(host));
                writer.WriteString("deviceType", host.Handler.DeviceType);
                writer.WriteStartArray("workers");
                foreach (WorkerStatus worker in host.Workers)
                {
                    writer.WriteStartObject();
                    writer.WriteString("id", worker.Id);
                    writer.WriteString("startTime", worker.StartTime);
                    writer.WriteString("status", worker.Status);
                    writer.WriteNumber("memoryUsage", 0);
                    writer.WriteNumber("pid", Environment.ProcessId);
                    writer.WriteBoolean("gpu", false);
                    writer.WriteString("gpuUsage", "N/A");
                    writer.WriteEndObject();
                }
                writer.WriteEndArray();
                writer.WriteStartObject("jobQueueStatus");
                writer.WriteNumber("remainingCapacity", host.RemainingCapacity);
                writer.WriteNumber("pendingRequests", host.PendingRequests);
                writer.WriteEndObject();
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        });
        return HttpIo.WriteRawJsonAsync(context, 200, json);
    }

    private async Task ScaleAsync(HttpContext context)
    {
        string model = HttpIo.RouteString(context, "model")!;
        string? version = HttpIo.RouteString(context, "version");
        int min = HttpIo.QueryInt(context.Request, "min_worker") ?? 1;
        int max = HttpIo.QueryInt(context.Request, "max_worker") ?? min;
        if (min < 0)
        {
            throw ServeException.BadRequest("min_worker must be at least 0.");
        }
        if (max < min)
        {
            throw ServeException.BadRequest("max_worker cannot be less than min_worker.");
        }
        ModelVersionHost host = registry.Resolve(model, version);
        // Workers are added at once; retired ones finish the batch they hold. synchronous=true also waits for them.
        Task scaling = host.ScaleAsync(min, max, CancellationToken.None);
        snapshots?.Write();
        if (!HttpIo.QueryBool(context.Request, "synchronous"))
        {
            _ = scaling.ContinueWith(t => ServeLog.ScaleFailed(logger, t.Exception!, host.Name), CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
            await HttpIo.WriteStatusAsync(context, 202, Processing).ConfigureAwait(false);
            return;
        }
        await scaling.WaitAsync(context.RequestAborted).ConfigureAwait(false);
        string status = $"Workers scaled to {min} for model: {model}" + (version is null ? "" : $", version: {version}");
        await HttpIo.WriteStatusAsync(context, 200, status).ConfigureAwait(false);
    }

    private async Task UnregisterAsync(HttpContext context)
    {
        string model = HttpIo.RouteString(context, "model")!;
        await registry.UnregisterAsync(model, HttpIo.RouteString(context, "version"), context.RequestAborted).ConfigureAwait(false);
        snapshots?.Write();
        await HttpIo.WriteStatusAsync(context, 200, $"Model \"{model}\" unregistered").ConfigureAwait(false);
    }

    /// <summary>Kiln's own: <c>PUT /models/{m}/{v}/canary?weight=10</c> sends 10 % of unversioned requests to v; weight=0 ends it.</summary>
    private Task SetCanaryAsync(HttpContext context)
    {
        string model = HttpIo.RouteString(context, "model")!;
        string version = HttpIo.RouteString(context, "version")!;
        string? text = context.Request.Query["weight"];
        if (!double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double weight))
        {
            throw ServeException.BadRequest("Parameter weight is required: the percentage of requests (0 to 100) the canary version gets.");
        }
        registry.SetCanary(model, version, weight);
        snapshots?.Write();
        return HttpIo.WriteStatusAsync(context, 200, weight > 0
            ? $"Canary for model \"{model}\": version \"{version}\" gets {weight.ToString(System.Globalization.CultureInfo.InvariantCulture)}% of requests without a version"
            : $"Canary for model \"{model}\" ended");
    }

    private Task SetDefaultAsync(HttpContext context)
    {
        string model = HttpIo.RouteString(context, "model")!;
        string version = HttpIo.RouteString(context, "version")!;
        registry.SetDefault(model, version);
        snapshots?.Write();
        return HttpIo.WriteStatusAsync(context, 200, $"Default version successfully updated for model \"{model}\" to \"{version}\"");
    }
}
