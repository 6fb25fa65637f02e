using System.Diagnostics;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using Amazon.S3;
using Amazon.S3.Model;
using Kiln.Data.Remote;

namespace Kiln.Data.Tests.Remote;

/// <summary>
/// A real s3rver (npm package, pinned in eng/node/package.json) started once for the S3 tests:
/// <c>node --openssl-legacy-provider eng/node/node_modules/s3rver/bin/s3rver.js -d TMP -p 0 -a 127.0.0.1 --silent --configure-bucket kiln-test</c>.
/// Port 0 lets the server take a free port itself; it prints <c>S3rver listening on 127.0.0.1:PORT</c>
/// even when silent, and the fixture waits (at most 30 s) for that line and a TCP connection. Disposing
/// kills that one process by its id. Not installed is a failure, never a skip.
/// </summary>
public sealed partial class S3rverFixture : IAsyncLifetime
{
    public const string Bucket = "kiln-test";

    // s3rver's built-in account.
    private const string AccessKey = "S3RVER";
    private const string SecretKey = "S3RVER";
    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(30);

    private readonly string _folder = Directory.CreateTempSubdirectory("kiln-s3rver-").FullName;
    private Process? _process;
    private AmazonS3Client? _client;

    public Uri ServiceUrl { get; private set; } = null!;

    /// <summary>A client for putting test objects (the code under test gets its own).</summary>
    public IAmazonS3 Client => _client!;

    public S3StoreOptions Options(int listPageSize = 1000, long chunkSize = RemoteReadOptions.DefaultChunkSize) => new()
    {
        ServiceUrl = ServiceUrl,
        AccessKeyId = AccessKey,
        SecretAccessKey = SecretKey,
        ListPageSize = listPageSize,
        Read = new RemoteReadOptions
        {
            ChunkSize = chunkSize,
            MaxRetries = 2,
            InitialBackoff = TimeSpan.FromMilliseconds(5),
            MaxBackoff = TimeSpan.FromMilliseconds(50),
            ReadTimeout = TimeSpan.FromSeconds(20),
        },
    };

    public async Task PutAsync(string key, byte[] content)
    {
        using var body = new MemoryStream(content, writable: false);
        // s3rver stores bodies as sent: no aws-chunked streaming encoding.
        await Client.PutObjectAsync(new PutObjectRequest { BucketName = Bucket, Key = key, InputStream = body, UseChunkEncoding = false });
    }

    public async Task InitializeAsync()
    {
        string root = RemoteTestData.RepositoryRoot();
        string script = Path.Combine(root, "eng", "node", "node_modules", "s3rver", "bin", "s3rver.js");
        if (!File.Exists(script))
        {
            throw new InvalidOperationException(
                $"s3rver is not installed ({script} is missing): run `npm ci --prefix eng/node` in {root}.");
        }

        var start = new ProcessStartInfo("node")
        {
            // s3rver's continuation tokens use DES, which OpenSSL 3 (Node 17+) keeps in its legacy provider.
            ArgumentList = { "--openssl-legacy-provider", script, "-d", _folder, "-p", "0", "-a", "127.0.0.1", "--silent", "--configure-bucket", Bucket },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        var listening = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var errors = new System.Text.StringBuilder();
        try
        {
            _process = Process.Start(start) ?? throw new InvalidOperationException("node did not start.");
        }
        catch (System.ComponentModel.Win32Exception error)
        {
            throw new InvalidOperationException("Cannot run `node` (Node.js 18 or later must be on PATH) to start s3rver.", error);
        }

        _process.OutputDataReceived += (_, line) =>
        {
            if (line.Data is not null && ListeningLine().Match(line.Data) is { Success: true } match)
            {
                listening.TrySetResult(int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            }
        };
        _process.ErrorDataReceived += (_, line) =>
        {
            lock (errors)
            {
                errors.AppendLine(line.Data);
            }
        };
        _process.EnableRaisingEvents = true;
        _process.Exited += (_, _) => listening.TrySetException(new InvalidOperationException($"s3rver exited with {_process.ExitCode}: {errors}"));
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        int port = await listening.Task.WaitAsync(s_startTimeout);
        await WaitForConnectionAsync(port);
        ServiceUrl = new Uri($"http://127.0.0.1:{port}");
        _client = S3ObjectStore.CreateClient(Options());
    }

    public async Task DisposeAsync()
    {
        _client?.Dispose();
        if (_process is not null)
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
            }

            _process.Dispose();
        }

        Directory.Delete(_folder, recursive: true);
    }

    private static async Task WaitForConnectionAsync(int port)
    {
        var clock = Stopwatch.StartNew();
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync("127.0.0.1", port).WaitAsync(TimeSpan.FromSeconds(2));
                return;
            }
            catch (Exception error) when ((error is SocketException or TimeoutException) && attempt < 50 && clock.Elapsed < s_startTimeout)
            {
                await Task.Delay(100);
            }
        }
    }

    [GeneratedRegex(@"listening on 127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningLine();
}

[CollectionDefinition(Name)]
public sealed class S3rverGroup : ICollectionFixture<S3rverFixture>
{
    public const string Name = "s3rver";
}
