using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Kiln.Cli.Tests;

/// <summary><c>kiln archive</c> in this process, and a real <c>kiln serve</c> process on 127.0.0.1.</summary>
public sealed partial class ServeCommandTests : IDisposable
{
    private const int Sigterm = 15;

    private static readonly string PreprocessOnnx = Path.Combine(AppContext.BaseDirectory, "DnnImageModels", "ResNetPrepOnnx", "ResNetPreprocess.onnx");

    private readonly string _folder = Directory.CreateTempSubdirectory("kiln-serve-cli-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    [Fact]
    public async Task Archive_WritesTheMar_RefusesToOverwriteWithoutForce_AndOverwritesWithIt()
    {
        string store = Directory.CreateDirectory(Path.Combine(_folder, "store")).FullName;
        string mar = Path.Combine(store, "pre.mar");
        string[] args = ["archive", "--model-name", "pre", "--version", "2.0", "--serialized-file", PreprocessOnnx, "--handler", "tensor", "--export-path", store];

        (int code, string output, string error) = await RunAsync(args);
        code.ShouldBe(0, error);
        output.ShouldContain($"archive: wrote {mar}");
        File.Exists(mar).ShouldBeTrue();
        long size = new FileInfo(mar).Length;
        size.ShouldBeGreaterThan(0);

        (code, _, error) = await RunAsync(args);
        code.ShouldNotBe(0);
        error.ShouldContain(mar);
        error.ShouldContain("--force");

        (code, output, error) = await RunAsync([.. args, "--force"]);
        code.ShouldBe(0, error);
        output.ShouldContain($"archive: wrote {mar}");
        // The manifest records the creation time, so the size may differ by a byte or two; the archive must still be whole.
        using System.IO.Compression.ZipArchive rewritten = System.IO.Compression.ZipFile.OpenRead(mar);
        rewritten.GetEntry("MAR-INF/MANIFEST.json").ShouldNotBeNull();
        Math.Abs(new FileInfo(mar).Length - size).ShouldBeLessThan(64);
    }

    [Fact]
    public async Task Archive_MissingSerializedFile_FailsAndNamesIt()
    {
        string missing = Path.Combine(_folder, "absent.onnx");

        (int code, _, string error) = await RunAsync("archive", "--model-name", "pre", "--serialized-file", missing, "--handler", "tensor", "--export-path", _folder);

        code.ShouldNotBe(0);
        error.ShouldContain(missing);
        File.Exists(Path.Combine(_folder, "pre.mar")).ShouldBeFalse();
    }

    [Fact]
    public async Task Serve_ARealProcess_AnswersWithTokens_AndStopsOnSigterm()
    {
        string store = Directory.CreateDirectory(Path.Combine(_folder, "store")).FullName;
        string work = Directory.CreateDirectory(Path.Combine(_folder, "work")).FullName;
        (int code, _, string archiveError) = await RunAsync("archive", "--model-name", "pre", "--serialized-file", PreprocessOnnx, "--handler", "tensor", "--export-path", store);
        code.ShouldBe(0, archiveError);

        int[] ports = FreePorts(4);
        string config = Path.Combine(_folder, "config.properties");
        await File.WriteAllLinesAsync(config,
        [
            $"inference_address=http://127.0.0.1:{ports[0]}",
            $"management_address=http://127.0.0.1:{ports[1]}",
            $"metrics_address=http://127.0.0.1:{ports[2]}",
            $"grpc_inference_port={ports[3]}",
        ]);
        var start = new ProcessStartInfo("dotnet")
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "kiln.dll"), "serve", "--model-store", store, "--models", "pre=pre.mar", "--ts-config", config, "--ncs" },
            WorkingDirectory = work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using Process kiln = Process.Start(start)!;
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        kiln.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        kiln.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        kiln.BeginOutputReadLine();
        kiln.BeginErrorReadLine();
        string Logs() { lock (stdout) { lock (stderr) { return $"stdout:\n{stdout}\nstderr:\n{stderr}"; } } }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        var inference = new Uri($"http://127.0.0.1:{ports[0]}");
        var management = new Uri($"http://127.0.0.1:{ports[1]}");
        try
        {
            // /ping answers once the listeners are up; the model and key file come before the "serve: inference" line.
            string keyFile = Path.Combine(work, "key_file.json");
            var ready = Stopwatch.StartNew();
            while (true)
            {
                kiln.HasExited.ShouldBeFalse(Logs());
                if (ready.Elapsed > TimeSpan.FromSeconds(60))
                {
                    throw new TimeoutException($"kiln serve did not become ready in 60 s.\n{Logs()}");
                }
                if (File.Exists(keyFile) && Logs().Contains("serve: token authorization on", StringComparison.Ordinal) && await PingsAsync(http, inference))
                {
                    break;
                }
                await Task.Delay(200);
            }
            Logs().ShouldContain("serve: loaded pre 1.0 from pre.mar");

            using JsonDocument keys = JsonDocument.Parse(await File.ReadAllTextAsync(keyFile));
            string inferenceKey = keys.RootElement.GetProperty("inference").GetProperty("key").GetString()!;
            string managementKey = keys.RootElement.GetProperty("management").GetProperty("key").GetString()!;

            float[] input = new float[3 * 224 * 224];
            for (int i = 0; i < input.Length; i++)
            {
                input[i] = i % 256;
            }
            string body = JsonSerializer.Serialize(new { data = input, shape = new[] { 1, 3, 224, 224 } });

            using (var predict = new HttpRequestMessage(HttpMethod.Post, new Uri(inference, "/predictions/pre")) { Content = new StringContent(body, Encoding.UTF8, "application/json") })
            {
                predict.Headers.Authorization = new AuthenticationHeaderValue("Bearer", inferenceKey);
                using HttpResponseMessage response = await http.SendAsync(predict);
                string answer = await response.Content.ReadAsStringAsync();
                response.StatusCode.ShouldBe(HttpStatusCode.OK, answer);
                using JsonDocument result = JsonDocument.Parse(answer);
                result.RootElement.GetProperty("data").GetArrayLength().ShouldBe(3 * 224 * 224);
                result.RootElement.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ShouldBe([1, 3, 224, 224]);
            }

            using (var list = new HttpRequestMessage(HttpMethod.Get, new Uri(management, "/models")))
            {
                list.Headers.Authorization = new AuthenticationHeaderValue("Bearer", managementKey);
                using HttpResponseMessage response = await http.SendAsync(list);
                string answer = await response.Content.ReadAsStringAsync();
                response.StatusCode.ShouldBe(HttpStatusCode.OK, answer);
                using JsonDocument models = JsonDocument.Parse(answer);
                models.RootElement.GetProperty("models").EnumerateArray().Select(m => m.GetProperty("modelName").GetString()).ShouldContain("pre");
            }

            using (HttpResponseMessage response = await http.PostAsync(new Uri(inference, "/predictions/pre"), new StringContent(body, Encoding.UTF8, "application/json")))
            {
                response.StatusCode.ShouldBe(HttpStatusCode.Unauthorized);
                response.Headers.WwwAuthenticate.ShouldContain(h => h.Scheme == "Bearer");
            }
            using (HttpResponseMessage response = await http.GetAsync(new Uri(management, "/models")))
            {
                response.StatusCode.ShouldBe(HttpStatusCode.Unauthorized);
            }

            Kill(kiln.Id, Sigterm).ShouldBe(0);
            using var stopping = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await kiln.WaitForExitAsync(stopping.Token);
            kiln.WaitForExit(); // drains the redirected output

            kiln.ExitCode.ShouldBe(143, Logs());
            Logs().ShouldContain("serve: draining in-flight requests");
            Logs().ShouldContain("kiln: interrupted");
            File.Exists(keyFile).ShouldBeFalse("key_file.json is deleted on shutdown");
        }
        finally
        {
            if (!kiln.HasExited)
            {
                kiln.Kill(entireProcessTree: true);
                kiln.WaitForExit();
            }
        }
    }

    private static async Task<bool> PingsAsync(HttpClient http, Uri inference)
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            using HttpResponseMessage response = await http.GetAsync(new Uri(inference, "/ping"), timeout.Token);
            return response.StatusCode == HttpStatusCode.OK;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return false;
        }
    }

    /// <summary>Distinct free loopback ports: all bound at once, then released.</summary>
    private static int[] FreePorts(int count)
    {
        var listeners = new List<TcpListener>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                listeners.Add(listener);
            }
            return [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        }
        finally
        {
            foreach (TcpListener listener in listeners)
            {
                listener.Stop();
            }
        }
    }

    private static async Task<(int Code, string Output, string Error)> RunAsync(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await KilnCommandLine.InvokeAsync(args, output, error, CancellationToken.None);
        return (code, output.ToString(), error.ToString());
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);
}
