using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using k8s;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Kiln.Launch.Tests.Kubernetes;

/// <summary>
/// A tiny stand-in for the Kubernetes API server on 127.0.0.1 (minimal APIs on Kestrel): creates, lists and deletes
/// Jobs and Services, lists the pods a test put in, and serves their canned logs. Not a cluster: nothing runs.
/// </summary>
internal sealed class FakeApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly string _dir;

    private FakeApiServer(WebApplication app, string dir)
    {
        _app = app;
        _dir = dir;
    }

    public Uri Url { get; private set; } = null!;

    /// <summary>A kubeconfig file that points at this server.</summary>
    public string Kubeconfig => Path.Combine(_dir, "kubeconfig");

    /// <summary>Jobs by <c>namespace/name</c>.</summary>
    public ConcurrentDictionary<string, JsonObject> Jobs { get; } = new();

    /// <summary>Services by <c>namespace/name</c>.</summary>
    public ConcurrentDictionary<string, JsonObject> Services { get; } = new();

    /// <summary>Pods by <c>namespace/name</c> (tests add them).</summary>
    public ConcurrentDictionary<string, JsonObject> Pods { get; } = new();

    /// <summary>Log lines by pod name, with the time each was written.</summary>
    public ConcurrentDictionary<string, List<(DateTimeOffset At, string Text)>> Logs { get; } = new();

    /// <summary>Every request, as <c>METHOD path?query</c>, in order.</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    /// <summary>When set, creating a Service answers 403 with this message.</summary>
    public string? RefuseServices { get; set; }

    public static async Task<FakeApiServer> StartAsync()
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        WebApplication app = builder.Build();
        string dir = Path.Combine(Path.GetTempPath(), "kiln-k8s-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var server = new FakeApiServer(app, dir);
        server.Map();
        await app.StartAsync();
        server.Url = new Uri(app.Urls.First());
        await File.WriteAllTextAsync(server.Kubeconfig, $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: fake
              cluster:
                server: {server.Url.ToString().TrimEnd('/')}
            users:
            - name: tester
              user:
                token: fake-token
            contexts:
            - name: fake
              context:
                cluster: fake
                user: tester
                namespace: default
            current-context: fake
            """);
        return server;
    }

    /// <summary>Sets a Job's status (e.g. <c>{"active":1}</c> or a <c>Complete</c> condition).</summary>
    public void SetJobStatus(string ns, string name, JsonObject status) => Jobs[$"{ns}/{name}"]["status"] = status;

    /// <summary>Adds a pod of a Job's replica, as the Job controller would make it.</summary>
    public void AddPod(string ns, string job, int index, string phase, int? exitCode = null, DateTimeOffset? created = null, string? suffix = null)
    {
        JsonObject jobObject = Jobs[$"{ns}/{job}"];
        var labels = (JsonObject)jobObject["spec"]!["template"]!["metadata"]!["labels"]!.DeepClone();
        labels["batch.kubernetes.io/job-completion-index"] = index.ToString(CultureInfo.InvariantCulture);
        labels["job-name"] = job;
        string name = $"{job}-{index}-{suffix ?? "abcde"}";
        var status = new JsonObject { ["phase"] = phase };
        if (exitCode is { } code)
        {
            status["containerStatuses"] = new JsonArray(new JsonObject
            {
                ["name"] = "main",
                ["ready"] = false,
                ["restartCount"] = 0,
                ["image"] = "img",
                ["imageID"] = "",
                ["state"] = new JsonObject { ["terminated"] = new JsonObject { ["exitCode"] = code, ["reason"] = code == 0 ? "Completed" : "Error" } },
            });
        }
        Pods[$"{ns}/{name}"] = new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Pod",
            ["metadata"] = new JsonObject
            {
                ["name"] = name,
                ["namespace"] = ns,
                ["labels"] = labels,
                ["creationTimestamp"] = (created ?? DateTimeOffset.UtcNow).UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
                ["annotations"] = new JsonObject { ["batch.kubernetes.io/job-completion-index"] = index.ToString(CultureInfo.InvariantCulture) },
            },
            ["spec"] = new JsonObject { ["containers"] = new JsonArray(new JsonObject { ["name"] = "main", ["image"] = "img" }) },
            ["status"] = status,
        };
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private void Map()
    {
        _app.Use(async (context, next) =>
        {
            Requests.Enqueue($"{context.Request.Method} {context.Request.Path}{context.Request.QueryString}");
            await next(context);
        });
        _app.MapPost("/apis/batch/v1/namespaces/{ns}/jobs", (string ns, JsonObject body) => Create(Jobs, ns, body));
        _app.MapGet("/apis/batch/v1/namespaces/{ns}/jobs", (string ns, string? labelSelector) => List(Jobs, ns, labelSelector, "JobList", "batch/v1"));
        _app.MapDelete("/apis/batch/v1/namespaces/{ns}/jobs/{name}", (string ns, string name) => Delete(Jobs, ns, name));
        _app.MapPost("/api/v1/namespaces/{ns}/services", (string ns, JsonObject body) =>
            RefuseServices is { } refusal ? Status(403, "Forbidden", refusal) : Create(Services, ns, body));
        // As the real API server: deleting a Service answers the deleted Service, deleting a Job (background) a Status.
        _app.MapDelete("/api/v1/namespaces/{ns}/services/{name}", (string ns, string name) =>
            Services.TryRemove($"{ns}/{name}", out JsonObject? service) ? Results.Json(service) : Status(404, "NotFound", $"services \"{name}\" not found"));
        _app.MapGet("/api/v1/namespaces/{ns}/pods", (string ns, string? labelSelector) => List(Pods, ns, labelSelector, "PodList", "v1"));
        _app.MapGet("/api/v1/namespaces/{ns}/pods/{name}/log", (string ns, string name, bool? timestamps, int? sinceSeconds) =>
        {
            if (!Pods.ContainsKey($"{ns}/{name}"))
            {
                return Status(404, "NotFound", $"pods \"{name}\" not found");
            }
            IEnumerable<(DateTimeOffset At, string Text)> lines = Logs.GetValueOrDefault(name) ?? [];
            if (sinceSeconds is { } seconds)
            {
                DateTimeOffset from = DateTimeOffset.UtcNow.AddSeconds(-seconds);
                lines = lines.Where(l => l.At >= from);
            }
            string text = string.Concat(lines.Select(l => (timestamps == true ? l.At.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture) + " " : "") + l.Text + "\n"));
            return Results.Text(text, "text/plain");
        });
    }

    private static IResult Create(ConcurrentDictionary<string, JsonObject> store, string ns, JsonObject body)
    {
        var metadata = (JsonObject)body["metadata"]!;
        string name = (string)metadata["name"]!;
        metadata["namespace"] = ns;
        metadata["uid"] = Guid.NewGuid().ToString();
        metadata["creationTimestamp"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        return store.TryAdd($"{ns}/{name}", body)
            ? Results.Json(body, statusCode: 201)
            : Status(409, "AlreadyExists", $"\"{name}\" already exists");
    }

    private static IResult List(ConcurrentDictionary<string, JsonObject> store, string ns, string? selector, string kind, string apiVersion)
    {
        var items = new JsonArray();
        foreach ((string key, JsonObject item) in store.OrderBy(i => i.Key, StringComparer.Ordinal))
        {
            if (key.StartsWith(ns + "/", StringComparison.Ordinal) && Matches(item["metadata"]?["labels"] as JsonObject, selector))
            {
                items.Add(item.DeepClone());
            }
        }
        return Results.Json(new JsonObject { ["apiVersion"] = apiVersion, ["kind"] = kind, ["metadata"] = new JsonObject(), ["items"] = items });
    }

    private static IResult Delete(ConcurrentDictionary<string, JsonObject> store, string ns, string name) =>
        store.TryRemove($"{ns}/{name}", out _)
            ? Results.Json(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Status", ["status"] = "Success" })
            : Status(404, "NotFound", $"\"{name}\" not found");

    private static IResult Status(int code, string reason, string message) =>
        Results.Json(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Status", ["status"] = "Failure", ["reason"] = reason, ["message"] = message, ["code"] = code }, statusCode: code);

    /// <summary>Label selectors of <c>k=v</c> and bare <c>k</c> (exists) terms.</summary>
    private static bool Matches(JsonObject? labels, string? selector)
    {
        if (string.IsNullOrEmpty(selector))
        {
            return true;
        }
        foreach (string term in selector.Split(','))
        {
            string[] kv = term.Split('=', 2);
            string? actual = (string?)labels?[kv[0]];
            if (actual is null || (kv.Length == 2 && actual != kv[1]))
            {
                return false;
            }
        }
        return true;
    }
}

/// <summary>Serializes KubernetesClient models into the fake server's JSON.</summary>
internal static class FakeJson
{
    public static JsonObject From(object model) => (JsonObject)JsonNode.Parse(KubernetesJson.Serialize(model))!;
}
