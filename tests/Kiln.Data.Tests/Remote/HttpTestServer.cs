using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Logging;

namespace Kiln.Data.Tests.Remote;

/// <summary>
/// A real Kestrel server on http://127.0.0.1:{free port} over a temp folder of generated files:
/// <c>/files/{name}</c> is the static-file middleware (ranges, ETags, 404), and a few misbehaving
/// endpoints fail, cut, stall or ignore ranges on purpose. Each misbehaving endpoint takes an id, under
/// which the server records the Range header of every request it got.
/// </summary>
public sealed class HttpTestServer : IAsyncLifetime
{
    /// <summary>3 MiB and a bit: an odd length that no chunk size divides.</summary>
    public const int DataLength = (3 * 1024 * 1024) + 12_345;

    private readonly ConcurrentDictionary<string, ConcurrentQueue<string>> _requests = new(StringComparer.Ordinal);
    private WebApplication? _app;

    public string Folder { get; } = Directory.CreateTempSubdirectory("kiln-http-").FullName;

    public byte[] Data { get; } = RemoteTestData.Bytes(DataLength);

    public Uri BaseAddress { get; private set; } = null!;

    public Uri Url(string pathAndQuery) => new(BaseAddress, pathAndQuery);

    /// <summary>The Range headers ("-" when none) of the requests made under <paramref name="id"/>, in order.</summary>
    public IReadOnlyList<string> RequestsFor(string id) =>
        _requests.TryGetValue(id, out ConcurrentQueue<string>? queue) ? [.. queue] : [];

    public async Task InitializeAsync()
    {
        await File.WriteAllBytesAsync(Path.Combine(Folder, "data.bin"), Data);
        await File.WriteAllBytesAsync(Path.Combine(Folder, "empty.bin"), []);

        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        WebApplication app = builder.Build();
        app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = new PhysicalFileProvider(Folder),
            RequestPath = "/files",
            ServeUnknownFileTypes = true,
        });

        // 503 (or ?status=) for the first {failures} requests under {id}, with ?retryAfter= seconds if given; then the file with ranges.
        app.MapGet("/flaky/{id}/{failures:int}/{name}", (HttpContext context, string id, int failures, string name, int? status, int? retryAfter) =>
        {
            if (Record(context, id) > failures)
            {
                return Results.File(Path.Combine(Folder, name), "application/octet-stream", enableRangeProcessing: true);
            }

            if (retryAfter is int seconds)
            {
                context.Response.Headers.RetryAfter = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            return Results.StatusCode(status ?? StatusCodes.Status503ServiceUnavailable);
        });

        // For the first {times} requests under {id}: announce the asked range, send {cutAfter} bytes of it, then end the connection.
        app.MapGet("/cut/{id}/{cutAfter:int}/{times:int}/{name}", (RequestDelegate)CutAsync);

        // The whole file with 200, whatever the Range header says.
        app.MapGet("/norange/{id}/{name}", (HttpContext context, string id, string name) =>
        {
            Record(context, id);
            return Results.File(Path.Combine(Folder, name), "application/octet-stream", enableRangeProcessing: false);
        });

        // Headers and 1000 bytes, then silence until the client goes away (at most 60 s).
        app.MapGet("/stall/{id}/{name}", (RequestDelegate)StallAsync);

        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
        _app = app;
    }

    public async Task DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.StopAsync(CancellationToken.None);
            await _app.DisposeAsync();
        }

        Directory.Delete(Folder, recursive: true);
    }

    private int Record(HttpContext context, string id)
    {
        ConcurrentQueue<string> queue = _requests.GetOrAdd(id, static _ => new ConcurrentQueue<string>());
        string range = context.Request.Headers.Range.ToString();
        queue.Enqueue(range.Length == 0 ? "-" : range);
        return queue.Count;
    }

    private static string Route(HttpContext context, string name) => (string)context.Request.RouteValues[name]!;

    private async Task CutAsync(HttpContext context)
    {
        string path = Path.Combine(Folder, Route(context, "name"));
        int cutAfter = int.Parse(Route(context, "cutAfter"), System.Globalization.CultureInfo.InvariantCulture);
        int times = int.Parse(Route(context, "times"), System.Globalization.CultureInfo.InvariantCulture);
        if (Record(context, Route(context, "id")) > times)
        {
            await Results.File(path, "application/octet-stream", enableRangeProcessing: true).ExecuteAsync(context);
            return;
        }

        byte[] file = await File.ReadAllBytesAsync(path, context.RequestAborted);
        long start = 0;
        long end = file.Length - 1;
        if (context.Request.GetTypedHeaders().Range is { Ranges.Count: 1 } range)
        {
            Microsoft.Net.Http.Headers.RangeItemHeaderValue item = range.Ranges.Single();
            start = item.From ?? 0;
            end = Math.Min(item.To ?? end, end);
        }

        context.Response.StatusCode = StatusCodes.Status206PartialContent;
        context.Response.ContentLength = end - start + 1;
        context.Response.Headers.ContentRange = $"bytes {start}-{end}/{file.Length}";
        int sent = (int)Math.Min(cutAfter, end - start + 1);
        await context.Response.Body.WriteAsync(file.AsMemory((int)start, sent), context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);

        // Half-close once Kestrel has handed the bytes to the socket (it sends from its own loop after the
        // flush): the client reads every byte sent, then meets the end of the stream too early.
        await Task.Delay(100, context.RequestAborted);
        Socket? socket = context.Features.Get<IConnectionSocketFeature>()?.Socket;
        socket?.Shutdown(SocketShutdown.Send);
        await WaitAsync(TimeSpan.FromSeconds(10), context);

        context.Abort();
    }

    /// <summary>Waits until the client goes away, the server begins to stop, or <paramref name="limit"/> passes.</summary>
    private async Task WaitAsync(TimeSpan limit, HttpContext context)
    {
        CancellationToken stopping = _app?.Lifetime.ApplicationStopping ?? CancellationToken.None;
        using var either = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, stopping);
        try
        {
            await Task.Delay(limit, either.Token);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task StallAsync(HttpContext context)
    {
        Record(context, Route(context, "id"));
        byte[] file = await File.ReadAllBytesAsync(Path.Combine(Folder, Route(context, "name")), context.RequestAborted);
        context.Response.ContentLength = file.Length;
        await context.Response.Body.WriteAsync(file.AsMemory(0, 1000), context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
        await WaitAsync(TimeSpan.FromSeconds(60), context);

        context.Abort();
    }
}
