using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Metrics;

/// <summary>TorchServe's metrics API: <c>GET /metrics</c> in Prometheus text format on its own Kestrel listener bound to 127.0.0.1.</summary>
internal sealed class MetricsEndpoint : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly PrometheusMetrics _metrics;

    private MetricsEndpoint(WebApplication app, PrometheusMetrics metrics)
    {
        _app = app;
        _metrics = metrics;
    }

    /// <summary>The bound address, e.g. http://127.0.0.1:8082/.</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>Starts listening on <paramref name="port"/> (0 picks a free one) and aggregating <paramref name="serveMetrics"/>.</summary>
    public static async Task<MetricsEndpoint> StartAsync(int port, ServeMetrics serveMetrics, ILoggerFactory loggerFactory, CancellationToken cancellationToken)
    {
        var metrics = new PrometheusMetrics(serveMetrics.Meter, Guid.NewGuid().ToString());
        WebApplicationBuilder builder = Hosting.LoopbackHost.CreateBuilder(loggerFactory, kestrel => kestrel.Listen(IPAddress.Loopback, port));
        builder.Services.AddRoutingCore();
        WebApplication app = builder.Build();
        app.UseRouting();
        app.MapGet("/metrics", context => WriteAsync(context, metrics));
        app.MapFallback(context =>
        {
            context.Response.StatusCode = 404;
            return Task.CompletedTask;
        });
        var endpoint = new MetricsEndpoint(app, metrics);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        endpoint.Address = Hosting.LoopbackHost.BoundAddress(app);
        return endpoint;
    }

    private static async Task WriteAsync(HttpContext context, PrometheusMetrics metrics)
    {
        byte[] text = System.Text.Encoding.UTF8.GetBytes(metrics.Render());
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        context.Response.ContentLength = text.Length;
        await context.Response.Body.WriteAsync(text, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Stops listening and the aggregation.</summary>
    public async Task StopAsync(CancellationToken cancellationToken) => await _app.StopAsync(cancellationToken).ConfigureAwait(false);

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync().ConfigureAwait(false);
        _metrics.Dispose();
    }
}
