using System.Globalization;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Kiln.Launch.Rendezvous;

/// <summary>A key-value pair as etcd returns it.</summary>
internal readonly record struct EtcdKeyValue(byte[] Key, byte[] Value, long ModRevision);

/// <summary>One event of an etcd watch.</summary>
internal readonly record struct EtcdWatchEvent(bool IsDelete, byte[] Key);

/// <summary>
/// A small client of etcd v3's JSON gateway (<c>POST /v3/kv/*</c>, <c>/v3/lease/*</c>, <c>/v3/watch</c>): bytes travel
/// base64-encoded, 64-bit integers as JSON strings, and zero values are left out of responses.
/// </summary>
/// <remarks>
/// Requests go to the first endpoint that answers; after a connection failure the next endpoint is tried, and the one
/// that answered is used first from then on. Thread-safe. The caller owns the <see cref="HttpClient"/>.
/// </remarks>
internal sealed class EtcdGateway
{
    private static readonly MediaTypeHeaderValue s_json = new("application/json");
    private readonly HttpClient _http;
    private readonly IReadOnlyList<Uri> _endpoints;
    private readonly TimeSpan _requestTimeout;
    private int _current;

    public EtcdGateway(HttpClient http, IReadOnlyList<Uri> endpoints, TimeSpan requestTimeout)
    {
        ArgumentNullException.ThrowIfNull(http);
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentOutOfRangeException.ThrowIfZero(endpoints.Count);
        _http = http;
        _endpoints = endpoints;
        _requestTimeout = requestTimeout;
    }

    /// <summary>The endpoints, as given.</summary>
    public IReadOnlyList<Uri> Endpoints => _endpoints;

    /// <summary>Puts a value, attached to a lease when <paramref name="lease"/> is not 0.</summary>
    public async Task PutAsync(byte[] key, byte[] value, long lease, CancellationToken cancellationToken)
    {
        using JsonDocument _ = await PostAsync("/v3/kv/put", Put(key, value, lease), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The key's value and modification revision, or null when the key is not set.</summary>
    public async Task<EtcdKeyValue?> GetAsync(byte[] key, CancellationToken cancellationToken)
    {
        using JsonDocument response = await PostAsync("/v3/kv/range", new JsonObject { ["key"] = Convert.ToBase64String(key) }, cancellationToken).ConfigureAwait(false);
        return FirstKeyValue(response.RootElement);
    }

    /// <summary>Deletes the key (or the range [key, rangeEnd)); returns how many keys were deleted.</summary>
    public async Task<long> DeleteAsync(byte[] key, byte[]? rangeEnd, CancellationToken cancellationToken)
    {
        var body = new JsonObject { ["key"] = Convert.ToBase64String(key) };
        if (rangeEnd is not null)
        {
            body["range_end"] = Convert.ToBase64String(rangeEnd);
        }
        using JsonDocument response = await PostAsync("/v3/kv/deleterange", body, cancellationToken).ConfigureAwait(false);
        return ReadInt64(response.RootElement, "deleted");
    }

    /// <summary>
    /// Runs a transaction whose success branch is <paramref name="onSuccess"/> and whose failure branch reads the key;
    /// returns whether the comparison held and, when it did not, the key's current value.
    /// </summary>
    public async Task<(bool Succeeded, EtcdKeyValue? Current)> TxnAsync(JsonObject compare, JsonObject onSuccess, byte[] key, CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["compare"] = new JsonArray(compare),
            ["success"] = new JsonArray(onSuccess),
            ["failure"] = new JsonArray(new JsonObject { ["request_range"] = new JsonObject { ["key"] = Convert.ToBase64String(key) } }),
        };
        using JsonDocument response = await PostAsync("/v3/kv/txn", body, cancellationToken).ConfigureAwait(false);
        JsonElement root = response.RootElement;
        if (root.TryGetProperty("succeeded", out JsonElement succeeded) && succeeded.GetBoolean())
        {
            return (true, null);
        }
        EtcdKeyValue? current = null;
        if (root.TryGetProperty("responses", out JsonElement responses))
        {
            foreach (JsonElement r in responses.EnumerateArray())
            {
                if (r.TryGetProperty("response_range", out JsonElement range))
                {
                    current = FirstKeyValue(range);
                }
            }
        }
        return (false, current);
    }

    /// <summary>Reads several keys in one transaction (one snapshot); returns which are set and the snapshot's revision.</summary>
    public async Task<(HashSet<string> Present, long Revision)> ExistAsync(IReadOnlyList<byte[]> keys, CancellationToken cancellationToken)
    {
        var reads = new JsonArray();
        foreach (byte[] key in keys)
        {
            reads.Add(new JsonObject { ["request_range"] = new JsonObject { ["key"] = Convert.ToBase64String(key), ["keys_only"] = true } });
        }
        using JsonDocument response = await PostAsync("/v3/kv/txn", new JsonObject { ["success"] = reads }, cancellationToken).ConfigureAwait(false);
        JsonElement root = response.RootElement;
        var present = new HashSet<string>(StringComparer.Ordinal);
        if (root.TryGetProperty("responses", out JsonElement responses))
        {
            foreach (JsonElement r in responses.EnumerateArray())
            {
                if (r.TryGetProperty("response_range", out JsonElement range) && range.TryGetProperty("kvs", out JsonElement kvs))
                {
                    foreach (JsonElement kv in kvs.EnumerateArray())
                    {
                        present.Add(Convert.ToBase64String(kv.GetProperty("key").GetBytesFromBase64()));
                    }
                }
            }
        }
        return (present, HeaderRevision(root));
    }

    /// <summary>Grants a lease of <paramref name="ttlSeconds"/> seconds; returns its id.</summary>
    public async Task<long> GrantLeaseAsync(long ttlSeconds, CancellationToken cancellationToken)
    {
        using JsonDocument response = await PostAsync("/v3/lease/grant", new JsonObject { ["TTL"] = ttlSeconds }, cancellationToken).ConfigureAwait(false);
        return ReadInt64(response.RootElement, "ID");
    }

    /// <summary>Renews a lease once; returns its remaining TTL in seconds (0: the lease has expired).</summary>
    public async Task<long> KeepAliveAsync(long lease, CancellationToken cancellationToken)
    {
        using JsonDocument response = await PostAsync("/v3/lease/keepalive", new JsonObject { ["ID"] = lease }, cancellationToken).ConfigureAwait(false);
        JsonElement root = response.RootElement;
        return root.TryGetProperty("result", out JsonElement result) ? ReadInt64(result, "TTL") : 0;
    }

    /// <summary>Revokes a lease: every key attached to it is deleted.</summary>
    public async Task RevokeLeaseAsync(long lease, CancellationToken cancellationToken)
    {
        using JsonDocument _ = await PostAsync("/v3/lease/revoke", new JsonObject { ["ID"] = lease }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Watches [key, rangeEnd) from <paramref name="startRevision"/>; yields events until the caller stops or the watch
    /// ends. A watch that the server cancels (e.g. because the revision was compacted) ends the enumeration.
    /// </summary>
    public async IAsyncEnumerable<EtcdWatchEvent> WatchAsync(byte[] key, byte[] rangeEnd, long startRevision, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["create_request"] = new JsonObject
            {
                ["key"] = Convert.ToBase64String(key),
                ["range_end"] = Convert.ToBase64String(rangeEnd),
                ["start_revision"] = startRevision.ToString(CultureInfo.InvariantCulture),
            },
        };
        using HttpResponseMessage response = await SendAsync("/v3/watch", body, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        Stream stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using ConfiguredAsyncDisposable streamScope = stream.ConfigureAwait(false);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }
            List<EtcdWatchEvent> events = [];
            bool canceled = false;
            using (JsonDocument message = JsonDocument.Parse(line))
            {
                if (!message.RootElement.TryGetProperty("result", out JsonElement result))
                {
                    yield break;
                }
                canceled = result.TryGetProperty("canceled", out JsonElement c) && c.GetBoolean();
                if (result.TryGetProperty("events", out JsonElement list))
                {
                    foreach (JsonElement e in list.EnumerateArray())
                    {
                        bool isDelete = e.TryGetProperty("type", out JsonElement type) && type.GetString() == "DELETE";
                        events.Add(new EtcdWatchEvent(isDelete, e.GetProperty("kv").GetProperty("key").GetBytesFromBase64()));
                    }
                }
            }
            foreach (EtcdWatchEvent e in events)
            {
                yield return e;
            }
            if (canceled)
            {
                yield break;
            }
        }
    }

    /// <summary>A put request body.</summary>
    public static JsonObject Put(byte[] key, byte[] value, long lease)
    {
        var put = new JsonObject { ["key"] = Convert.ToBase64String(key), ["value"] = Convert.ToBase64String(value) };
        if (lease != 0)
        {
            put["lease"] = lease.ToString(CultureInfo.InvariantCulture);
        }
        return put;
    }

    /// <summary>A comparison that holds when the key is not set (its version is 0).</summary>
    public static JsonObject CompareMissing(byte[] key) =>
        new() { ["key"] = Convert.ToBase64String(key), ["target"] = "VERSION", ["result"] = "EQUAL", ["version"] = "0" };

    /// <summary>A comparison that holds when the key's value is <paramref name="value"/>.</summary>
    public static JsonObject CompareValue(byte[] key, byte[] value) =>
        new() { ["key"] = Convert.ToBase64String(key), ["target"] = "VALUE", ["result"] = "EQUAL", ["value"] = Convert.ToBase64String(value) };

    /// <summary>A comparison that holds when the key was last modified at <paramref name="revision"/>.</summary>
    public static JsonObject CompareModRevision(byte[] key, long revision) =>
        new() { ["key"] = Convert.ToBase64String(key), ["target"] = "MOD", ["result"] = "EQUAL", ["mod_revision"] = revision.ToString(CultureInfo.InvariantCulture) };

    private static EtcdKeyValue? FirstKeyValue(JsonElement range)
    {
        if (!range.TryGetProperty("kvs", out JsonElement kvs) || kvs.GetArrayLength() == 0)
        {
            return null;
        }
        JsonElement kv = kvs[0];
        byte[] value = kv.TryGetProperty("value", out JsonElement v) ? v.GetBytesFromBase64() : [];
        return new EtcdKeyValue(kv.GetProperty("key").GetBytesFromBase64(), value, ReadInt64(kv, "mod_revision"));
    }

    private static long HeaderRevision(JsonElement root) =>
        root.TryGetProperty("header", out JsonElement header) ? ReadInt64(header, "revision") : 0;

    /// <summary>Reads a 64-bit integer that the gateway writes as a string (or leaves out when it is 0).</summary>
    private static long ReadInt64(JsonElement element, string name)
    {
        if (!element.TryGetProperty(name, out JsonElement value))
        {
            return 0;
        }
        return value.ValueKind == JsonValueKind.String
            ? long.Parse(value.GetString()!, NumberStyles.Integer, CultureInfo.InvariantCulture)
            : value.GetInt64();
    }

    private async Task<JsonDocument> PostAsync(string path, JsonObject body, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_requestTimeout);
        try
        {
            using HttpResponseMessage response = await SendAsync(path, body, HttpCompletionOption.ResponseContentRead, timeout.Token).ConfigureAwait(false);
            Stream content = await response.Content.ReadAsStreamAsync(timeout.Token).ConfigureAwait(false);
            await using ConfiguredAsyncDisposable contentScope = content.ConfigureAwait(false);
            return await JsonDocument.ParseAsync(content, cancellationToken: timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"etcd did not answer {path} within {_requestTimeout.TotalSeconds:0.###} s (endpoints {string.Join(", ", _endpoints)}).");
        }
    }

    private async Task<HttpResponseMessage> SendAsync(string path, JsonObject body, HttpCompletionOption completion, CancellationToken cancellationToken)
    {
        string json = body.ToJsonString();
        HttpRequestException? last = null;
        int start = Volatile.Read(ref _current);
        for (int attempt = 0; attempt < _endpoints.Count; attempt++)
        {
            int index = (start + attempt) % _endpoints.Count;
            Uri endpoint = _endpoints[index];
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(endpoint, path))
            {
                Content = new StringContent(json, Encoding.UTF8, s_json.MediaType!),
            };
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(request, completion, cancellationToken).ConfigureAwait(false);
            }
            catch (HttpRequestException ex)
            {
                last = ex;
                continue;
            }
            if (!response.IsSuccessStatusCode)
            {
                string error = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
                response.Dispose();
                throw new LaunchException($"etcd at {endpoint} refused {path} with {(int)response.StatusCode}: {error.Trim()}");
            }
            Volatile.Write(ref _current, index);
            return response;
        }
        throw new LaunchException($"Cannot reach etcd at {string.Join(", ", _endpoints)}: {last?.Message}", last!);
    }
}
