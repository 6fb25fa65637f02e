using System.Collections.Concurrent;
using Kiln.Data.Remote;

namespace Kiln.Data.Nodes;

/// <summary>
/// Opens locations for the readers: local paths, http(s) URLs (range requests, retries, resume) and
/// s3://bucket/key objects on the configured S3-compatible endpoint. One per registry.
/// </summary>
internal sealed class StorageAccess : IDisposable
{
    private readonly Lazy<HttpClient> _http;
    private readonly bool _ownsHttp;
    private readonly ConcurrentDictionary<string, S3ObjectStore> _stores = new(StringComparer.Ordinal);

    public StorageAccess(HttpClient? http, S3StoreOptions? s3, RemoteReadOptions? read)
    {
        _ownsHttp = http is null;
        _http = new Lazy<HttpClient>(() => http ?? new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) }) { Timeout = Timeout.InfiniteTimeSpan });
        S3 = s3;
        Read = read ?? s3?.Read ?? new RemoteReadOptions();
    }

    public S3StoreOptions? S3 { get; }

    public RemoteReadOptions Read { get; }

    public Stream Open(string location)
    {
        if (location.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || location.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            return new HttpObjectReader(_http.Value, Read).OpenRead(new Uri(location));
        }
        if (S3Location.TryParse(location, out S3Location s3))
        {
            return Store().OpenRead(s3.Bucket, s3.Key);
        }
        if (location.Contains("://", StringComparison.Ordinal))
        {
            throw new DataPipelineException($"{location}: no reader for this scheme (Kiln reads local paths, http, https and s3)");
        }
        if (!File.Exists(location))
        {
            throw new FileNotFoundException($"{location} does not exist", location);
        }
        return new FileStream(location, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
    }

    public IReadOnlyList<S3ObjectInfo> List(S3Location prefix) => Store().List(prefix.Bucket, prefix.Key);

    private S3ObjectStore Store()
    {
        S3StoreOptions options = S3 ?? throw new DataPipelineException("an s3:// location needs an S3 endpoint: configure NodeRegistry.UseS3 (kiln data: --s3-endpoint)");
        return _stores.GetOrAdd(options.ServiceUrl?.ToString() ?? "aws", _ => new S3ObjectStore(options));
    }

    public void Dispose()
    {
        foreach (S3ObjectStore store in _stores.Values)
        {
            store.Dispose();
        }
        if (_ownsHttp && _http.IsValueCreated)
        {
            _http.Value.Dispose();
        }
    }
}

/// <summary>Lists the objects under an s3://bucket/prefix, sorted by key, as s3:// locations.</summary>
internal sealed class S3ListNode : Node<string>
{
    private readonly S3Location _prefix;
    private readonly StorageAccess _storage;
    private readonly System.Text.RegularExpressions.Regex[] _patterns;
    private string[] _keys = [];
    private int _position;

    public S3ListNode(string id, S3Location prefix, string[] patterns, StorageAccess storage, System.Text.Json.Nodes.JsonObject? parameters)
        : base(id, "s3_list", [], parameters)
    {
        (_prefix, _storage) = (prefix, storage);
        _patterns = [.. patterns.Select(FileListerNode.GlobToRegex)];
    }

    protected override bool Produce(out string item)
    {
        if (_position >= _keys.Length)
        {
            item = "";
            return false;
        }
        item = _keys[_position++];
        return true;
    }

    protected override void ResetCore(System.Text.Json.Nodes.JsonObject? state)
    {
        try
        {
            _keys = [.. _storage.List(_prefix)
                .Where(o => _patterns.Length == 0 || _patterns.Any(p => p.IsMatch(o.Key[_prefix.Key.Length..].TrimStart('/'))))
                .Select(o => new S3Location(_prefix.Bucket, o.Key).ToString())
                .Order(StringComparer.Ordinal)];
        }
        catch (RemoteStorageException ex)
        {
            throw new DataPipelineException($"node '{Id}' (s3_list): {ex.Message}", ex);
        }
        _position = state?["position"]?.GetValue<int>() ?? 0;
        if (state?["count"]?.GetValue<int>() is int count && count != _keys.Length)
        {
            throw new DataPipelineException($"node '{Id}' (s3_list): {_prefix} held {count} objects at the checkpoint and holds {_keys.Length} now");
        }
    }

    protected override System.Text.Json.Nodes.JsonObject? SaveCore() => new() { ["position"] = _position, ["count"] = _keys.Length };
}
