using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Kiln.Launch.Rendezvous;

namespace Kiln.Launch.Tests.Etcd;

/// <summary>
/// A real single-member etcd (Debian's etcd-server, <c>/usr/bin/etcd</c> or <c>etcd</c> on PATH, or <c>$KILN_ETCD</c>)
/// on 127.0.0.1 with ephemeral client and peer ports and a temporary data folder; started once for the collection and
/// ended by its process id.
/// </summary>
public sealed class EtcdFixture : IAsyncLifetime
{
    private Process? _etcd;
    private string _dataDir = "";

    /// <summary>The client URL, e.g. http://127.0.0.1:41234.</summary>
    public Uri ClientUrl { get; private set; } = null!;

    /// <summary>etcd's stdout and stderr, for failure messages.</summary>
    public string LogPath => _dataDir + ".log";

    public async Task InitializeAsync()
    {
        string binary = FindEtcd();
        _dataDir = Path.Combine(Path.GetTempPath(), "kiln-etcd-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_dataDir);
        for (int attempt = 0; ; attempt++)
        {
            int clientPort = FreePort();
            int peerPort = FreePort();
            ClientUrl = new Uri($"http://127.0.0.1:{clientPort}");
            string peer = $"http://127.0.0.1:{peerPort}";
            var start = new ProcessStartInfo(binary)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in (string[])[
                "--name", "default", "--data-dir", Path.Combine(_dataDir, attempt.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                "--listen-client-urls", ClientUrl.ToString().TrimEnd('/'), "--advertise-client-urls", ClientUrl.ToString().TrimEnd('/'),
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer,
                "--log-level", "warn"])
            {
                start.ArgumentList.Add(arg);
            }
            _etcd = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {binary}.");
            var log = new StreamWriter(LogPath, append: true) { AutoFlush = true };
            _etcd.OutputDataReceived += (_, e) => Log(log, e.Data);
            _etcd.ErrorDataReceived += (_, e) => Log(log, e.Data);
            _etcd.BeginOutputReadLine();
            _etcd.BeginErrorReadLine();
            if (await ReadyAsync())
            {
                return;
            }
            Stop();
            if (attempt == 2)
            {
                throw new InvalidOperationException($"etcd did not start on {ClientUrl}; see {LogPath}.");
            }
        }
    }

    public Task DisposeAsync()
    {
        Stop();
        try
        {
            Directory.Delete(_dataDir, recursive: true);
            File.Delete(LogPath);
        }
        catch (IOException)
        {
            // A file still held open: leave it to the temp folder's cleanup.
        }
        return Task.CompletedTask;
    }

    /// <summary>A store for a fresh run (a unique run id unless one is given).</summary>
    internal EtcdStore CreateStore(string? runId = null, TimeSpan? leaseTtl = null) =>
        new(new EtcdStoreOptions { Endpoints = [ClientUrl], RunId = runId ?? "test-" + Guid.NewGuid().ToString("N")[..12], LeaseTtl = leaseTtl });

    private static void Log(StreamWriter log, string? line)
    {
        if (line is not null)
        {
            lock (log)
            {
                log.WriteLine(line);
            }
        }
    }

    private void Stop()
    {
        if (_etcd is { } process)
        {
            // End exactly the process this fixture started (Process.Kill signals its id, not a name).
            if (!process.HasExited)
            {
                process.Kill();
                process.WaitForExit(5000);
            }
            process.Dispose();
            _etcd = null;
        }
    }

    private async Task<bool> ReadyAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(1) };
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(15))
        {
            if (_etcd!.HasExited)
            {
                return false;
            }
            try
            {
                using var content = new StringContent("{\"key\":\"AA==\"}");
                using HttpResponseMessage response = await http.PostAsync(new Uri(ClientUrl, "/v3/kv/range"), content);
                if (response.IsSuccessStatusCode)
                {
                    return true;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
            {
                // Not listening yet.
            }
            await Task.Delay(50);
        }
        return false;
    }

    private static string FindEtcd()
    {
        if (Environment.GetEnvironmentVariable("KILN_ETCD") is { Length: > 0 } configured)
        {
            return configured;
        }
        if (File.Exists("/usr/bin/etcd"))
        {
            return "/usr/bin/etcd";
        }
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "etcd");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new InvalidOperationException("etcd is not installed (Debian: apt-get install etcd-server; or set KILN_ETCD to the binary); eng/test.sh installs it.");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>Every class that needs the real etcd joins this collection: one etcd for all of them, tests run one at a time.</summary>
[CollectionDefinition(Name)]
public sealed class EtcdGroup : ICollectionFixture<EtcdFixture>
{
    public const string Name = "etcd";
}
