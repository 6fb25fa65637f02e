using System.Diagnostics;
using Kiln.Serve.Inference;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Hosting;

/// <summary>TorchServe's inference API: <c>GET /ping</c>, <c>POST /predictions/{model}[/{version}]</c>.</summary>
internal sealed class InferenceApi(ModelRegistry registry, ServeOptions options, ILogger logger)
{
    private static readonly string[] s_predictMethods = ["POST", "PUT"];

    public void Map(IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/ping", context => HttpIo.WriteStatusAsync(context, 200, "Healthy"));
        // POST, and PUT for `curl -T file` as TorchServe's docs use it.
        endpoints.MapMethods("/predictions/{model}", s_predictMethods, context => HttpIo.GuardAsync(context, logger, PredictAsync));
        endpoints.MapMethods("/predictions/{model}/{version}", s_predictMethods, context => HttpIo.GuardAsync(context, logger, PredictAsync));
        endpoints.MapMethods("/explanations/{model}", s_predictMethods, context => HttpIo.GuardAsync(context, logger, ExplainAsync));
        endpoints.MapMethods("/explanations/{model}/{version}", s_predictMethods, context => HttpIo.GuardAsync(context, logger, ExplainAsync));
        new Protocols.OpenInferenceApi(registry, options, logger).Map(endpoints);
    }

    private Task PredictAsync(HttpContext context) => RunAsync(context, explain: false);

    private Task ExplainAsync(HttpContext context) => RunAsync(context, explain: true);

    private async Task RunAsync(HttpContext context, bool explain)
    {
        long startedAt = Stopwatch.GetTimestamp();
        CancellationToken cancellationToken = context.RequestAborted;
        ModelVersionHost host = registry.Resolve(HttpIo.RouteString(context, "model")!, HttpIo.RouteString(context, "version"));
        if (explain && !host.Handler.SupportsExplanations)
        {
            throw new ServeException(501, "NotImplementedException",
                $"Model \"{host.Name}\" version {host.Version} uses handler \"{host.Archive.Manifest.Handler}\", which does not explain its predictions; use /predictions.");
        }
        int status = 500;
        try
        {
            byte[] body = await HttpIo.ReadBodyAsync(context.Request, options.MaxRequestSize, cancellationToken).ConfigureAwait(false);
            object? prepared = host.Handler.Prepare(body, context.Request.ContentType);
            var job = new InferenceJob(body, context.Request.ContentType, explain, prepared);
            if (!host.TryEnqueue(job))
            {
                ServeLog.QueueFull(logger, host.Name, host.Version, host.Settings.JobQueueSize);
                context.Response.Headers.RetryAfter = "1";
                throw ServeException.Unavailable(
                    $"Model \"{host.Name}\" has no worker to serve inference request. Please use scale workers API to add workers. " +
                    $"(Or its job queue of {host.Settings.JobQueueSize} is full: retry later.)");
            }
            byte[] json = await job.WaitAsync(host, logger, cancellationToken).ConfigureAwait(false);
            status = 200;
            await HttpIo.WriteRawJsonAsync(context, 200, json, job.ResponseContentType).ConfigureAwait(false);
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
}
