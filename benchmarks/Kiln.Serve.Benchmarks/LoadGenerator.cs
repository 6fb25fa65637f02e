using System.Diagnostics;
using System.Net.Http.Headers;

namespace Kiln.Serve.Benchmarks;

/// <summary>One concurrency level of the closed-loop run.</summary>
internal sealed record LevelResult(int Concurrency, long Requests, long Errors, string? FirstError, double Seconds, double RequestsPerSecond, LatencySummary Latency);

/// <summary>
/// A closed-loop HTTP load generator: N clients, each sending its next request when the previous one is answered
/// (body read in full). Only loopback addresses are accepted; every level is bounded in time and request count.
/// </summary>
internal sealed class LoadGenerator : IDisposable
{
    private readonly HttpClient _client;

    public LoadGenerator(string? bearerToken, int maxConcurrency)
    {
        var handler = new SocketsHttpHandler
        {
            // One connection per client, kept open: what a pool of keep-alive clients does.
            MaxConnectionsPerServer = Math.Max(1, maxConcurrency),
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            UseProxy = false,
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = System.Net.DecompressionMethods.None,
        };
        _client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(120) };
        _client.DefaultRequestVersion = System.Net.HttpVersion.Version11;
        if (bearerToken is not null)
        {
            _client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", bearerToken);
        }
    }

    /// <summary>Sends one request and returns the status and body (for the correctness check before a run).</summary>
    public async Task<(int Status, string Body)> SendOnceAsync(Uri url, byte[] body, string contentType, CancellationToken cancellationToken)
    {
        EnsureLoopback(url);
        using HttpRequestMessage request = Request(url, body, contentType);
        using HttpResponseMessage response = await _client.SendAsync(request, cancellationToken);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
    }

    /// <summary>
    /// Runs <paramref name="concurrency"/> clients against <paramref name="url"/>: <paramref name="warmupSeconds"/> unrecorded,
    /// then the requests answered within <paramref name="seconds"/> count; no client starts a request after that, and at most
    /// <paramref name="maxRequests"/> are started in all. Recorded latencies (Stopwatch ticks) are also added to <paramref name="sink"/>.
    /// </summary>
    public async Task<LevelResult> RunAsync(Uri url, byte[] body, string contentType, int concurrency, double warmupSeconds, double seconds, long maxRequests, List<long>? sink, CancellationToken cancellationToken)
    {
        EnsureLoopback(url);
        long started = 0, errors = 0;
        string? firstError = null;
        long measureStart = Stopwatch.GetTimestamp() + (long)(warmupSeconds * Stopwatch.Frequency);
        long measureEnd = measureStart + (long)(seconds * Stopwatch.Frequency);
        // In-flight requests at the end get at most a minute more before the level is abandoned.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(warmupSeconds + seconds + 60));
        var latencies = new List<long>[concurrency];
        var lastDone = new long[concurrency];

        async Task ClientAsync(int index)
        {
            List<long> mine = latencies[index] = new List<long>(1024);
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                if (start >= measureEnd || Interlocked.Increment(ref started) > maxRequests)
                {
                    return;
                }
                int status;
                try
                {
                    using HttpRequestMessage request = Request(url, body, contentType);
                    using HttpResponseMessage response = await _client.SendAsync(request, HttpCompletionOption.ResponseContentRead, deadline.Token);
                    status = (int)response.StatusCode;
                    if (status != 200)
                    {
                        string text = await response.Content.ReadAsStringAsync(deadline.Token);
                        Interlocked.CompareExchange(ref firstError, $"{status}: {Truncate(text)}", null);
                    }
                }
                catch (HttpRequestException ex)
                {
                    status = 0;
                    Interlocked.CompareExchange(ref firstError, ex.Message, null);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    status = 0;
                    Interlocked.CompareExchange(ref firstError, "no answer within the level's time limit or the client timeout", null);
                    if (deadline.IsCancellationRequested)
                    {
                        Interlocked.Increment(ref errors);
                        return;
                    }
                }
                long done = Stopwatch.GetTimestamp();
                if (status != 200)
                {
                    Interlocked.Increment(ref errors);
                }
                else if (done >= measureStart && done <= measureEnd)
                {
                    mine.Add(done - start);
                    lastDone[index] = done;
                }
            }
        }

        var clients = new Task[concurrency];
        for (int i = 0; i < concurrency; i++)
        {
            int index = i;
            clients[i] = Task.Run(() => ClientAsync(index), CancellationToken.None);
        }
        await Task.WhenAll(clients);
        long answered = latencies.Sum(l => (long)l.Count);
        foreach (List<long> mine in latencies)
        {
            sink?.AddRange(mine);
        }
        bool capped = Interlocked.Read(ref started) > maxRequests;
        double elapsed = capped && answered > 0 ? Math.Max(1, lastDone.Max() - measureStart) / (double)Stopwatch.Frequency : seconds;
        return new LevelResult(concurrency, answered, errors, firstError, elapsed, answered / elapsed, LatencySummary.FromTicks(latencies));
    }

    public void Dispose() => _client.Dispose();

    private static HttpRequestMessage Request(Uri url, byte[] body, string contentType)
    {
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        return new HttpRequestMessage(HttpMethod.Post, url) { Content = content, Version = System.Net.HttpVersion.Version11 };
    }

    private static void EnsureLoopback(Uri url)
    {
        if (!url.IsLoopback)
        {
            throw new InvalidOperationException($"{url} is not a loopback address; this load generator only targets 127.0.0.1.");
        }
    }

    private static string Truncate(string text) => text.Length <= 200 ? text : text[..200] + "…";
}
