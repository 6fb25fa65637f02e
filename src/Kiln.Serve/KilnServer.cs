using System.Net;
using Kiln.Serve.Hosting;
using Kiln.Serve.Inference;
using Kiln.Serve.Metrics;
using Kiln.Serve.Security;
using Kiln.Serve.Snapshots;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Serve;

/// <summary>
/// A running Kiln.Serve: TorchServe's inference API and management API, each on its own Kestrel listener bound to
/// 127.0.0.1, over one registry of models. Dispose (or <see cref="StopAsync"/>) stops listening, lets in-flight requests
/// finish and unloads every model.
/// </summary>
public sealed class KilnServer : IAsyncDisposable
{
    private readonly WebApplication _inference;
    private readonly WebApplication _management;
    private readonly ModelRegistry _registry;
    private readonly ServeMetrics _metrics;
    private readonly ILogger _logger;
    private int _stopped;
    private MetricsEndpoint? _metricsEndpoint;
    private Protocols.GrpcEndpoint? _grpcEndpoint;
    private TokenAuthorization? _auth;

    private KilnServer(WebApplication inference, WebApplication management, ModelRegistry registry, ServeMetrics metrics, ILogger logger)
    {
        _inference = inference;
        _management = management;
        _registry = registry;
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>The inference API's bound address, e.g. http://127.0.0.1:8080/.</summary>
    public Uri InferenceAddress { get; private set; } = null!;

    /// <summary>The management API's bound address, e.g. http://127.0.0.1:8081/.</summary>
    public Uri ManagementAddress { get; private set; } = null!;

    /// <summary>The metrics API's bound address (<c>GET /metrics</c>), e.g. http://127.0.0.1:8082/.</summary>
    public Uri MetricsAddress => _metricsEndpoint!.Address;

    /// <summary>The Open Inference Protocol gRPC listener's address (HTTP/2 cleartext), e.g. http://127.0.0.1:7070/.</summary>
    public Uri GrpcAddress => _grpcEndpoint!.Address;

    /// <summary>Whether the models came back from a snapshot at start (TorchServe then ignores <c>--models</c>).</summary>
    public bool RestoredFromSnapshot { get; private set; }

    /// <summary>The key file holding the management and inference keys; null when token authorization is disabled.</summary>
    public string? KeyFile => _auth?.KeyFile;

    /// <summary>Starts both listeners.</summary>
    /// <exception cref="ArgumentException">The model store is not set or does not exist.</exception>
    public static async Task<KilnServer> StartAsync(ServeOptions options, ILoggerFactory? loggerFactory = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrEmpty(options.ModelStore) || !Directory.Exists(options.ModelStore))
        {
            throw new ArgumentException($"Model store \"{options.ModelStore}\" is not an existing folder; pass --model-store.", nameof(options));
        }
        loggerFactory ??= NullLoggerFactory.Instance;
        ILogger logger = loggerFactory.CreateLogger("Kiln.Serve");
        var metrics = new ServeMetrics();
        var registry = new ModelRegistry(options, metrics, logger);
        TokenAuthorization? auth = options.DisableTokenAuthorization ? null : TokenAuthorization.Create(options);
        SnapshotStore? snapshots = options.NoConfigSnapshots ? null
            : new SnapshotStore(options.SnapshotDirectory ?? Path.Combine("logs", "config"), registry, logger);
        WebApplication inference = Build(options.InferencePort, loggerFactory, options, endpoints => new InferenceApi(registry, options, logger).Map(endpoints), logger,
            auth is null ? null : TokenAuthorization.Require(auth.InferenceKey, "inference", "/ping"));
        WebApplication management = Build(options.ManagementPort, loggerFactory, options, endpoints => new ManagementApi(registry, logger, new UrlPolicy(options), snapshots).Map(endpoints), logger,
            auth is null ? null : TokenAuthorization.Require(auth.ManagementKey, "management"));
        var server = new KilnServer(inference, management, registry, metrics, logger) { _auth = auth };
        try
        {
            await inference.StartAsync(cancellationToken).ConfigureAwait(false);
            await management.StartAsync(cancellationToken).ConfigureAwait(false);
            if (snapshots is not null)
            {
                server.RestoredFromSnapshot = await snapshots.RestoreAsync(cancellationToken).ConfigureAwait(false);
            }
            server._metricsEndpoint = await MetricsEndpoint.StartAsync(options.MetricsPort, metrics, loggerFactory, cancellationToken).ConfigureAwait(false);
            server._grpcEndpoint = await Protocols.GrpcEndpoint.StartAsync(options.GrpcPort, registry, options, auth?.InferenceKey, loggerFactory, logger, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        server.InferenceAddress = LoopbackHost.BoundAddress(inference);
        server.ManagementAddress = LoopbackHost.BoundAddress(management);
        ServeLog.Listening(logger, server.InferenceAddress, server.ManagementAddress);
        return server;
    }

    /// <summary>Registers a <c>.mar</c> from the model store, as <c>POST /models?url=…&amp;synchronous=true</c> does.</summary>
    /// <param name="url">The archive's file name in the model store.</param>
    /// <param name="modelName">Overrides the manifest's model name.</param>
    /// <param name="initialWorkers">Workers to start; null uses model-config.yaml's minWorkers, else one.</param>
    /// <param name="cancellationToken">Cancels the registration.</param>
    /// <returns>The registered model's name and version.</returns>
    /// <exception cref="ServeException">The archive is missing, unsafe or malformed, or the version is already registered.</exception>
    public async Task<(string Name, string Version)> RegisterModelAsync(string url, string? modelName = null, int? initialWorkers = 1, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(url);
        ModelVersionHost host = await _registry.RegisterAsync(new RegisterRequest(url) { ModelName = modelName, InitialWorkers = initialWorkers }, cancellationToken).ConfigureAwait(false);
        return (host.Name, host.Version);
    }

    /// <summary>Stops listening (in-flight HTTP requests finish), then drains and unloads every model.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 1)
        {
            return;
        }
        ServeLog.Stopping(_logger, _registry.Count);
        try
        {
            await _management.StopAsync(cancellationToken).ConfigureAwait(false);
            await _inference.StopAsync(cancellationToken).ConfigureAwait(false);
            if (_grpcEndpoint is not null)
            {
                await _grpcEndpoint.StopAsync(cancellationToken).ConfigureAwait(false);
            }
            if (_metricsEndpoint is not null)
            {
                await _metricsEndpoint.StopAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            await _registry.DisposeAsync().ConfigureAwait(false);
            await _management.DisposeAsync().ConfigureAwait(false);
            await _inference.DisposeAsync().ConfigureAwait(false);
            if (_grpcEndpoint is not null)
            {
                await _grpcEndpoint.DisposeAsync().ConfigureAwait(false);
            }
            if (_metricsEndpoint is not null)
            {
                await _metricsEndpoint.DisposeAsync().ConfigureAwait(false);
            }
            _metrics.Dispose();
            _auth?.DeleteKeyFile();
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    private static void LogAccess(ILogger access, HttpContext context, long started)
    {
        if (!access.IsEnabled(LogLevel.Information))
        {
            return;
        }
        double elapsedMs = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        string remote = $"{context.Connection.RemoteIpAddress}:{context.Connection.RemotePort}";
        string path = context.Request.Path.Value ?? "";
        ServeLog.Access(access, remote, context.Request.Method, path, context.Response.StatusCode, elapsedMs);
    }

    private static WebApplication Build(int port, ILoggerFactory loggerFactory, ServeOptions options, Action<WebApplication> map, ILogger logger, Func<RequestDelegate, RequestDelegate>? auth)
    {
        WebApplicationBuilder builder = LoopbackHost.CreateBuilder(loggerFactory, kestrel =>
        {
            // Bodies are read and limited by the endpoints (413 with TorchServe's error body).
            kestrel.Limits.MaxRequestBodySize = null;
            kestrel.Listen(IPAddress.Loopback, port);
        });
        builder.Services.AddRoutingCore();
        builder.Services.Configure<Microsoft.AspNetCore.Http.Features.FormOptions>(form => form.MultipartBodyLengthLimit = options.MaxRequestSize);
        WebApplication app = builder.Build();
        ILogger access = loggerFactory.CreateLogger("Kiln.Serve.Access");
        app.Use(next => async context =>
        {
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                await next(context).ConfigureAwait(false);
            }
            finally
            {
                LogAccess(access, context, started);
            }
        });
        if (auth is not null)
        {
            app.Use(auth);
        }
        app.UseRouting();
        map(app);
        app.MapFallback(context => HttpIo.GuardAsync(context, logger, _ =>
            throw new ServeException(404, "ResourceNotFoundException", "Requested resource is not found, please refer to API document.")));
        return app;
    }
}
