using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Kiln.Data.Remote;

namespace Kiln.Data.Tests.Remote;

/// <summary><see cref="HttpObjectReader"/> against a real Kestrel server on 127.0.0.1, blocking and async.</summary>
public sealed class HttpObjectReaderTests : IClassFixture<HttpTestServer>, IDisposable
{
    private readonly HttpTestServer _server;
    private readonly RangeRecordingHandler _handler = new();
    private readonly HttpClient _client;

    public HttpObjectReaderTests(HttpTestServer server)
    {
        _server = server;
        _client = new HttpClient(_handler) { Timeout = TimeSpan.FromSeconds(30) };
    }

    public void Dispose() => _client.Dispose();

    private static RemoteReadOptions Fast(int maxRetries = 5) => new()
    {
        MaxRetries = maxRetries,
        InitialBackoff = TimeSpan.FromMilliseconds(5),
        MaxBackoff = TimeSpan.FromMilliseconds(50),
        ReadTimeout = TimeSpan.FromSeconds(20),
    };

    private static string Id() => Guid.NewGuid().ToString("N");

    private static async Task<RemoteObjectStream> OpenAsync(HttpObjectReader reader, Uri uri, long offset, bool useAsync, string? ifMatch = null, CancellationToken cancellationToken = default) =>
        useAsync
            ? await reader.OpenReadAsync(uri, offset, ifMatch, cancellationToken)
            : await Task.Run(() => reader.OpenRead(uri, offset, ifMatch, cancellationToken));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_WholeFile_EqualsTheFile(bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());

        using RemoteObjectStream stream = await OpenAsync(reader, _server.Url("files/data.bin"), 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(_server.Data);
        stream.ObjectLength.ShouldBe(HttpTestServer.DataLength);
        stream.Position.ShouldBe(HttpTestServer.DataLength);
        stream.Retries.ShouldBe(0);
        stream.ETag.ShouldNotBeNull().ShouldStartWith("\"");
    }

    [Theory]
    [InlineData(0L, false)]
    [InlineData(0L, true)]
    [InlineData(1_500_007L, false)]
    [InlineData(1_500_007L, true)]
    [InlineData(HttpTestServer.DataLength - 1L, false)]
    [InlineData(HttpTestServer.DataLength - 1L, true)]
    [InlineData((long)HttpTestServer.DataLength, false)]
    [InlineData((long)HttpTestServer.DataLength, true)]
    public async Task OpenRead_AtAnOffset_ReturnsTheRestOfTheFile(long offset, bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());

        using RemoteObjectStream stream = await OpenAsync(reader, _server.Url("files/data.bin"), offset, useAsync);
        stream.Position.ShouldBe(offset);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(_server.Data[(int)offset..]);
        stream.ObjectLength.ShouldBe(HttpTestServer.DataLength);
        stream.Position.ShouldBe(HttpTestServer.DataLength);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_PastTheEnd_ThrowsNamingTheOffsetAndLength(bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());
        Uri uri = _server.Url("files/data.bin");

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(reader, uri, HttpTestServer.DataLength + 1L, useAsync));

        error.Message.ShouldBe($"GET {uri}: offset {HttpTestServer.DataLength + 1} is past the end of the object ({HttpTestServer.DataLength} bytes)");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_EmptyFile_IsAnEmptyStream(bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());

        using RemoteObjectStream stream = await OpenAsync(reader, _server.Url("files/empty.bin"), 0, useAsync);

        (await RemoteTestData.ReadAllAsync(stream, useAsync)).ShouldBeEmpty();
        stream.ObjectLength.ShouldBe(0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_ChunksSmallerThanTheFile_AsksChunkByChunkAndReadsTheFile(bool useAsync)
    {
        const long Chunk = (64 * 1024) + 3;
        var reader = new HttpObjectReader(_client, new RemoteReadOptions { ChunkSize = Chunk });
        Uri uri = _server.Url("files/data.bin?chunks=" + Id());

        using RemoteObjectStream stream = await OpenAsync(reader, uri, 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync, bufferSize: 10_007);

        read.ShouldBe(_server.Data);
        var expected = new List<string>();
        for (long start = 0; start < HttpTestServer.DataLength; start += Chunk)
        {
            expected.Add($"bytes={start}-{Math.Min(start + Chunk, HttpTestServer.DataLength) - 1}");
        }

        expected.Count.ShouldBe(49);
        _handler.RangesFor(uri).ShouldBe(expected);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_ServerFailsTheFirstRequestsWith503_RetriesAndReadsTheFile(bool useAsync)
    {
        string id = Id();
        var retries = new ConcurrentQueue<RemoteRetry>();
        RemoteReadOptions options = Fast();
        options.OnRetry = retries.Enqueue;
        var reader = new HttpObjectReader(_client, options);
        Uri uri = _server.Url($"flaky/{id}/3/data.bin");

        using RemoteObjectStream stream = await OpenAsync(reader, uri, 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(_server.Data);
        stream.Retries.ShouldBe(3);
        _server.RequestsFor(id).Count.ShouldBe(4);
        retries.Select(r => r.Attempt).ShouldBe([1, 2, 3]);
        retries.ShouldAllBe(r => r.Error.StatusCode == 503 && r.Location == $"GET {uri}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_429WithRetryAfter_WaitsAsAskedCappedAtMaxBackoff(bool useAsync)
    {
        string id = Id();
        var retries = new ConcurrentQueue<RemoteRetry>();
        var options = new RemoteReadOptions
        {
            InitialBackoff = TimeSpan.FromMilliseconds(1),
            MaxBackoff = TimeSpan.FromMilliseconds(700),
            OnRetry = retries.Enqueue,
        };
        var reader = new HttpObjectReader(_client, options);
        var clock = Stopwatch.StartNew();

        using RemoteObjectStream stream = await OpenAsync(reader, _server.Url($"flaky/{id}/1/data.bin?status=429&retryAfter=30"), 0, useAsync);

        clock.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(650));
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10));
        RemoteRetry retry = retries.ShouldHaveSingleItem();
        retry.Delay.ShouldBe(TimeSpan.FromMilliseconds(700));
        retry.Error.StatusCode.ShouldBe(429);
        retry.Error.Message.ShouldEndWith(": 429 Too Many Requests");
        (await RemoteTestData.ReadAllAsync(stream, useAsync)).ShouldBe(_server.Data);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_ServerKeepsFailing_GivesUpAfterMaxRetriesNamingUrlAndStatus(bool useAsync)
    {
        string id = Id();
        var reader = new HttpObjectReader(_client, Fast(maxRetries: 2));
        Uri uri = _server.Url($"flaky/{id}/100/data.bin");

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(reader, uri, 0, useAsync));

        error.Message.ShouldBe($"GET {uri}: 503 Service Unavailable (gave up after 3 attempts)");
        error.StatusCode.ShouldBe(503);
        error.IsTransient.ShouldBeTrue();
        _server.RequestsFor(id).Count.ShouldBe(3);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_ConnectionCutMidBody_ResumesFromTheLastByteReceived(bool useAsync)
    {
        string id = Id();
        var reader = new HttpObjectReader(_client, Fast());
        Uri uri = _server.Url($"cut/{id}/300000/3/data.bin");

        using RemoteObjectStream stream = await OpenAsync(reader, uri, 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(_server.Data);
        stream.Retries.ShouldBe(3);
        long end = HttpTestServer.DataLength - 1;
        _server.RequestsFor(id).ShouldBe([
            $"bytes=0-{RemoteReadOptions.DefaultChunkSize - 1}",
            $"bytes=300000-{end}",
            $"bytes=600000-{end}",
            $"bytes=900000-{end}",
        ]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_ConnectionCutInEveryChunk_StillEqualsTheFile(bool useAsync)
    {
        string id = Id();
        RemoteReadOptions options = Fast(maxRetries: 1);
        options.ChunkSize = 1_000_000;
        var reader = new HttpObjectReader(_client, options);
        Uri uri = _server.Url($"cut/{id}/400000/1000/data.bin");

        using RemoteObjectStream stream = await OpenAsync(reader, uri, 1234, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        // Every response breaks after 400000 bytes, but each brings progress: one retry in a row suffices.
        read.ShouldBe(_server.Data[1234..]);
        var expected = new List<string>();
        for (long start = 1234; start < HttpTestServer.DataLength; start += 400_000)
        {
            expected.Add($"bytes={start}-{Math.Min(start + 1_000_000, HttpTestServer.DataLength) - 1}");
        }

        _server.RequestsFor(id).ShouldBe(expected);
        stream.Retries.ShouldBe(expected.Count - 1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_MissingFile_ThrowsNamingUrlAndStatus(bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());
        Uri uri = _server.Url("files/missing.tar");

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(reader, uri, 0, useAsync));

        error.Message.ShouldBe($"GET http://127.0.0.1:{_server.BaseAddress.Port}/files/missing.tar: 404 Not Found");
        error.StatusCode.ShouldBe(404);
        error.IsTransient.ShouldBeFalse();
        _handler.RangesFor(uri).Count.ShouldBe(1);
    }

    [Fact]
    public async Task GetLength_OfAFile_IsItsSizeAndOfAMissingOne_NamesHeadAndStatus()
    {
        var reader = new HttpObjectReader(_client, Fast());

        reader.GetLength(_server.Url("files/data.bin")).ShouldBe(HttpTestServer.DataLength);
        (await reader.GetLengthAsync(_server.Url("files/empty.bin"))).ShouldBe(0);
        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => reader.GetLengthAsync(_server.Url("files/missing.bin")));
        error.Message.ShouldBe($"HEAD {_server.Url("files/missing.bin")}: 404 Not Found");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_ServerIgnoresRange_SkipsToTheOffset(bool useAsync)
    {
        string id = Id();
        RemoteReadOptions options = Fast();
        options.ChunkSize = 64 * 1024;
        var reader = new HttpObjectReader(_client, options);

        using RemoteObjectStream stream = await OpenAsync(reader, _server.Url($"norange/{id}/data.bin"), 2_000_003, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(_server.Data[2_000_003..]);
        stream.RangeIgnored.ShouldBeTrue();
        _server.RequestsFor(id).ShouldBe([$"bytes=2000003-{2_000_003 + (64 * 1024) - 1}"]);
    }

    [Fact]
    public async Task ReadAsync_Cancelled_WhileTheServerStalls_StopsPromptly()
    {
        var reader = new HttpObjectReader(_client, new RemoteReadOptions { ReadTimeout = Timeout.InfiniteTimeSpan });
        using RemoteObjectStream stream = await reader.OpenReadAsync(_server.Url($"stall/{Id()}/data.bin"));
        var buffer = new byte[4096];
        (await stream.ReadAsync(buffer)).ShouldBe(1000);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var clock = Stopwatch.StartNew();

        await Should.ThrowAsync<OperationCanceledException>(stream.ReadAsync(buffer, cancel.Token).AsTask());

        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task Read_Cancelled_WhileTheServerStalls_EndsTheBlockingReadPromptly()
    {
        var reader = new HttpObjectReader(_client, new RemoteReadOptions { ReadTimeout = Timeout.InfiniteTimeSpan });
        using var cancel = new CancellationTokenSource();
        using RemoteObjectStream stream = reader.OpenRead(_server.Url($"stall/{Id()}/data.bin"), cancellationToken: cancel.Token);
        var buffer = new byte[4096];
        stream.Read(buffer, 0, buffer.Length).ShouldBe(1000);

        Task<int> blocked = Task.Factory.StartNew(() => stream.Read(buffer, 0, buffer.Length), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        await Task.Delay(200);
        blocked.IsCompleted.ShouldBeFalse();
        var clock = Stopwatch.StartNew();
        await cancel.CancelAsync();

        await Should.ThrowAsync<OperationCanceledException>(blocked.WaitAsync(TimeSpan.FromSeconds(10)));
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(5));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_ServerGoesSilent_RetriesAfterTheReadTimeoutThenGivesUp(bool useAsync)
    {
        string id = Id();
        RemoteReadOptions options = Fast(maxRetries: 1);
        options.ReadTimeout = TimeSpan.FromMilliseconds(300);
        var reader = new HttpObjectReader(_client, options);
        Uri uri = _server.Url($"stall/{id}/data.bin");
        using RemoteObjectStream stream = await OpenAsync(reader, uri, 0, useAsync);
        var clock = Stopwatch.StartNew();

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => RemoteTestData.ReadAllAsync(stream, useAsync));

        // The first response gives bytes 0-999, the retry skips them (the endpoint ignores ranges) and stalls again.
        error.Message.ShouldBe($"GET {uri}: no data for 0.3 s at byte 1000 (gave up after 2 attempts)");
        error.IsTransient.ShouldBeTrue();
        _server.RequestsFor(id).Count.ShouldBe(2);
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_FileReplacedBetweenChunks_FailsInsteadOfSplicing(bool useAsync)
    {
        string name = $"mutable-{Id()}.bin";
        string path = Path.Combine(_server.Folder, name);
        await File.WriteAllBytesAsync(path, _server.Data.AsMemory(0, 500_000).ToArray());
        RemoteReadOptions options = Fast();
        options.ChunkSize = 100_000;
        var reader = new HttpObjectReader(_client, options);
        Uri uri = _server.Url("files/" + name);
        using RemoteObjectStream stream = await OpenAsync(reader, uri, 0, useAsync);
        var chunk = new byte[100_000];
        int first = 0;
        while (first < chunk.Length)
        {
            int read = useAsync ? await stream.ReadAsync(chunk.AsMemory(first)) : stream.Read(chunk, first, chunk.Length - first);
            read.ShouldBeGreaterThan(0);
            first += read;
        }

        await File.WriteAllBytesAsync(path, RemoteTestData.Bytes(400_000, seed: 7));

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => RemoteTestData.ReadAllAsync(stream, useAsync));
        error.Message.ShouldStartWith($"GET {uri}: 412 Precondition Failed: the object is no longer version {stream.ETag}");
        error.StatusCode.ShouldBe(412);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_ResumedWithTheSavedETag_ContinuesAndWithAnotherOne_Fails(bool useAsync)
    {
        var reader = new HttpObjectReader(_client, Fast());
        Uri uri = _server.Url("files/data.bin");
        long position;
        string etag;
        using (RemoteObjectStream first = await OpenAsync(reader, uri, 0, useAsync))
        {
            var buffer = new byte[12_345];
            int read = useAsync ? await first.ReadAsync(buffer) : first.Read(buffer, 0, buffer.Length);
            read.ShouldBeGreaterThan(0);
            position = first.Position;
            etag = first.ETag.ShouldNotBeNull();
        }

        using RemoteObjectStream resumed = await OpenAsync(reader, uri, position, useAsync, ifMatch: etag);
        (await RemoteTestData.ReadAllAsync(resumed, useAsync)).ShouldBe(_server.Data[(int)position..]);

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(reader, uri, position, useAsync, ifMatch: "\"another-version\""));
        error.StatusCode.ShouldBe(412);
        error.Message.ShouldContain("\"another-version\"");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_NothingListens_GivesUpNamingTheUrl(bool useAsync)
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var reader = new HttpObjectReader(_client, Fast(maxRetries: 1));
        var uri = new Uri($"http://127.0.0.1:{port}/x.tar");

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(reader, uri, 0, useAsync));

        error.Message.ShouldStartWith($"GET http://127.0.0.1:{port}/x.tar: ");
        error.Message.ShouldEndWith("(gave up after 2 attempts)");
        error.StatusCode.ShouldBeNull();
        error.IsTransient.ShouldBeTrue();
    }

    [Fact]
    public void OpenRead_NotAnHttpUrl_IsRefused()
    {
        var reader = new HttpObjectReader(_client);

        Should.Throw<ArgumentException>(() => reader.OpenRead(new Uri("file:///etc/hostname"))).ParamName.ShouldBe("uri");
        Should.Throw<ArgumentException>(() => reader.OpenRead(new Uri("x.tar", UriKind.Relative))).ParamName.ShouldBe("uri");
        Should.Throw<ArgumentOutOfRangeException>(() => reader.OpenRead(_server.Url("files/data.bin"), -1));
    }

    /// <summary>Records the Range header of every request the client sends, per URL; supports blocking sends.</summary>
    private sealed class RangeRecordingHandler : DelegatingHandler
    {
        private readonly ConcurrentDictionary<Uri, ConcurrentQueue<string>> _ranges = new();

        public RangeRecordingHandler()
            : base(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(10) })
        {
        }

        public IReadOnlyList<string> RangesFor(Uri uri) =>
            _ranges.TryGetValue(uri, out ConcurrentQueue<string>? queue) ? [.. queue] : [];

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Record(request);
            return base.Send(request, cancellationToken);
        }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Record(request);
            return base.SendAsync(request, cancellationToken);
        }

        private void Record(HttpRequestMessage request) =>
            _ranges.GetOrAdd(request.RequestUri!, static _ => new ConcurrentQueue<string>()).Enqueue(request.Headers.Range?.ToString() ?? "-");
    }
}
