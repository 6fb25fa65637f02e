using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Kiln.Serve.Hosting;
using Kiln.Serve.Inference;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Protocols;

/// <summary>
/// The Open Inference Protocol (KServe v2) REST API, with the binary tensor extension for FP32, and KServe v1's
/// <c>:predict</c>, on the inference port. Tensors go through the model's <c>tensor</c> handler queue, so batching and
/// workers apply. Errors are <c>{"error":"…"}</c>.
/// </summary>
internal sealed class OpenInferenceApi(ModelRegistry registry, ServeOptions options, ILogger logger)
{
    /// <summary>The header that gives the JSON part's length in a binary-extension body.</summary>
    public const string HeaderLength = "Inference-Header-Content-Length";

    public void Map(IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/v2/health/live", context => WriteJsonAsync(context, 200, w => w.WriteBoolean("live", true)));
        endpoints.MapGet("/v2/health/ready", context => WriteJsonAsync(context, 200, w => w.WriteBoolean("ready", true)));
        endpoints.MapGet("/v2", context => WriteJsonAsync(context, 200, w =>
        {
            w.WriteString("name", "kiln-serve");
            w.WriteString("version", typeof(OpenInferenceApi).Assembly.GetName().Version?.ToString() ?? "0");
            w.WriteStartArray("extensions");
            w.WriteStringValue("binary_tensor_data");
            w.WriteEndArray();
        }));
        endpoints.MapGet("/v2/models/{model}", context => GuardAsync(context, MetadataAsync));
        endpoints.MapGet("/v2/models/{model}/versions/{version}", context => GuardAsync(context, MetadataAsync));
        endpoints.MapGet("/v2/models/{model}/ready", context => GuardAsync(context, ReadyAsync));
        endpoints.MapGet("/v2/models/{model}/versions/{version}/ready", context => GuardAsync(context, ReadyAsync));
        endpoints.MapPost("/v2/models/{model}/infer", context => GuardAsync(context, InferAsync));
        endpoints.MapPost("/v2/models/{model}/versions/{version}/infer", context => GuardAsync(context, InferAsync));
        endpoints.MapPost("/v1/models/{action}", context => GuardAsync(context, PredictV1Async));
        endpoints.MapGet("/v1/models/{model}", context => GuardAsync(context, ReadyV1Async));
    }

    private async Task GuardAsync(HttpContext context, Func<HttpContext, Task> endpoint)
    {
        try
        {
            await endpoint(context).ConfigureAwait(false);
        }
        catch (ServeException ex)
        {
            if (logger.IsEnabled(LogLevel.Debug))
            {
                ServeLog.RequestFailed(logger, context.Request.Method, context.Request.Path.Value ?? "", ex.StatusCode, ex.ErrorType, ex.Message);
            }
            if (!context.Response.HasStarted)
            {
                await WriteJsonAsync(context, ex.StatusCode, w => w.WriteString("error", ex.Message)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nothing to answer.
        }
    }

    private static Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> members) => HttpIo.WriteJsonAsync(context, status, members);

    private ModelVersionHost Resolve(HttpContext context) =>
        registry.Resolve(HttpIo.RouteString(context, "model")!, HttpIo.RouteString(context, "version"));

    private static ModelBackend? TensorModel(ModelVersionHost host) => (host.Handler as TensorHandler)?.Model;

    private static ModelBackend RequireTensorModel(ModelVersionHost host) =>
        TensorModel(host) ?? throw ServeException.BadRequest(
            $"Model \"{host.Name}\" version {host.Version} uses handler \"{host.Archive.Manifest.Handler}\"; the Open Inference Protocol serves models with the tensor handler.");

    private Task MetadataAsync(HttpContext context)
    {
        ModelVersionHost host = Resolve(context);
        ModelBackend? model = TensorModel(host);
        IReadOnlyList<ModelVersionHost> versions = registry.Describe(host.Name, "all");
        return WriteJsonAsync(context, 200, w =>
        {
            w.WriteString("name", host.Name);
            w.WriteStartArray("versions");
            foreach (ModelVersionHost version in versions)
            {
                w.WriteStringValue(version.Version);
            }
            w.WriteEndArray();
            w.WriteString("platform", model?.Platform ?? "onnxruntime_onnx");
            w.WriteStartArray("inputs");
            if (model is not null)
            {
                WriteTensorMetadata(w, model.InputName, model.InputDimensions);
            }
            w.WriteEndArray();
            w.WriteStartArray("outputs");
            for (int i = 0; model is not null && i < model.OutputNames.Count; i++)
            {
                WriteTensorMetadata(w, model.OutputNames[i], model.OutputDimensions[i]);
            }
            w.WriteEndArray();
        });
    }

    private static void WriteTensorMetadata(Utf8JsonWriter w, string name, long[] dimensions)
    {
        w.WriteStartObject();
        w.WriteString("name", name);
        w.WriteString("datatype", "FP32");
        w.WriteStartArray("shape");
        foreach (long d in dimensions)
        {
            w.WriteNumberValue(d <= 0 ? -1 : d);
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private Task ReadyAsync(HttpContext context)
    {
        ModelVersionHost host = Resolve(context);
        bool ready = host.WorkerCount > 0;
        return WriteJsonAsync(context, ready ? 200 : 400, w =>
        {
            w.WriteString("name", host.Name);
            w.WriteBoolean("ready", ready);
        });
    }

    private Task ReadyV1Async(HttpContext context)
    {
        ModelVersionHost host = Resolve(context);
        return WriteJsonAsync(context, 200, w =>
        {
            w.WriteString("name", host.Name);
            w.WriteBoolean("ready", host.WorkerCount > 0);
        });
    }

    private async Task InferAsync(HttpContext context)
    {
        long startedAt = Stopwatch.GetTimestamp();
        ModelVersionHost host = Resolve(context);
        int status = 500;
        try
        {
            ModelBackend model = RequireTensorModel(host);
            byte[] body = await HttpIo.ReadBodyAsync(context.Request, options.MaxRequestSize, context.RequestAborted).ConfigureAwait(false);
            InferRequest request = InferRequest.Parse(body, context.Request.Headers[HeaderLength].ToString(), model);
            FloatTensor[] outputs = await RunAsync(host, model, request.Input, context.RequestAborted).ConfigureAwait(false);
            (byte[] json, byte[] binary) = request.WriteResponse(host.Name, host.Version, model, outputs);
            status = 200;
            context.Response.StatusCode = 200;
            if (binary.Length > 0)
            {
                context.Response.ContentType = "application/octet-stream";
                context.Response.Headers[HeaderLength] = json.Length.ToString(CultureInfo.InvariantCulture);
            }
            else
            {
                context.Response.ContentType = "application/json";
            }
            context.Response.ContentLength = json.Length + binary.Length;
            await context.Response.Body.WriteAsync(json, context.RequestAborted).ConfigureAwait(false);
            if (binary.Length > 0)
            {
                await context.Response.Body.WriteAsync(binary, context.RequestAborted).ConfigureAwait(false);
            }
        }
        catch (ServeException ex)
        {
            status = ex.StatusCode;
            throw;
        }
        finally
        {
            registry.Metrics.Request(host.Name, host.Version, status, startedAt);
        }
    }

    private async Task PredictV1Async(HttpContext context)
    {
        long startedAt = Stopwatch.GetTimestamp();
        string action = HttpIo.RouteString(context, "action")!;
        const string Suffix = ":predict";
        if (!action.EndsWith(Suffix, StringComparison.Ordinal) || action.Length == Suffix.Length)
        {
            throw new ServeException(404, "ResourceNotFoundException", $"Unknown KServe v1 action \"{action}\"; use POST /v1/models/<model>:predict.");
        }
        ModelVersionHost host = registry.Resolve(action[..^Suffix.Length], null);
        int status = 500;
        try
        {
            ModelBackend model = RequireTensorModel(host);
            byte[] body = await HttpIo.ReadBodyAsync(context.Request, options.MaxRequestSize, context.RequestAborted).ConfigureAwait(false);
            FloatTensor input = TensorJson.ParseInstances(body, model);
            FloatTensor[] outputs = await RunAsync(host, model, input, context.RequestAborted).ConfigureAwait(false);
            status = 200;
            await WriteJsonAsync(context, 200, w =>
            {
                w.WritePropertyName("predictions");
                TensorJson.WriteNested(w, outputs[0].Data, outputs[0].Shape);
            }).ConfigureAwait(false);
        }
        catch (ServeException ex)
        {
            status = ex.StatusCode;
            throw;
        }
        finally
        {
            registry.Metrics.Request(host.Name, host.Version, status, startedAt);
        }
    }

    /// <summary>Queues one parsed tensor for the tensor handler and returns its output tensors (never rendered as JSON).</summary>
    internal async Task<FloatTensor[]> RunAsync(ModelVersionHost host, ModelBackend model, FloatTensor input, CancellationToken cancellationToken)
    {
        model.Validate(input);
        var job = new InferenceJob(ReadOnlyMemory<byte>.Empty, contentType: null, prepared: input);
        if (!host.TryEnqueue(job))
        {
            ServeLog.QueueFull(logger, host.Name, host.Version, host.Settings.JobQueueSize);
            throw ServeException.Unavailable($"Model \"{host.Name}\" has no worker to serve the request, or its job queue of {host.Settings.JobQueueSize} is full: retry later.");
        }
        object outcome = await job.WaitResultAsync(host, logger, cancellationToken).ConfigureAwait(false);
        return outcome is DeferredResponse { Payload: FloatTensor[] tensors }
            ? tensors
            : throw new ServeException(503, "InternalServerException", $"Model \"{host.Name}\" answered with bytes where the tensor handler gives tensors.");
    }
}
