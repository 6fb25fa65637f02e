using System.Globalization;

namespace Kiln.Launch.Rendezvous;

/// <summary>Where an <see cref="EtcdStore"/> keeps its keys and how long they live.</summary>
internal sealed record EtcdStoreOptions
{
    /// <summary>The default client port of etcd.</summary>
    public const int DefaultPort = 2379;

    /// <summary>etcd's client URLs (the JSON gateway is served on the client port). Required.</summary>
    public required IReadOnlyList<Uri> Endpoints { get; init; }

    /// <summary>
    /// The run (torchrun's <c>--rdzv-id</c>); keys live under <c>/kiln/rdzv/&lt;run_id&gt;/</c>. Null: no prefix is added,
    /// for callers whose keys already carry it (the agent's rendezvous writes <c>/kiln/rdzv/&lt;run_id&gt;/…</c> itself).
    /// </summary>
    public string? RunId { get; init; }

    /// <summary>
    /// When set, every key this store writes is attached to one lease of this TTL that the store keeps alive while it
    /// lives (renewed every third of the TTL); the keys vanish one TTL after the store is disposed or its process dies.
    /// Null (default): keys stay until deleted.
    /// </summary>
    /// <value>torch's etcd rendezvous uses 7200 s for the run's keys and 10 s for per-node keep-alive keys.</value>
    public TimeSpan? LeaseTtl { get; init; }

    /// <summary>How long one request may take before it fails with a <see cref="TimeoutException"/>. Default: 10 s.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The key prefix: <c>/kiln/rdzv/&lt;run_id&gt;/</c>, or empty without a run id.</summary>
    public string Prefix => RunId is null ? "" : $"/kiln/rdzv/{RunId}/";

    /// <summary>
    /// Parses torchrun's <c>--rdzv-endpoint</c> for etcd: one or more <c>host[:port]</c> or <c>http(s)://host:port</c>,
    /// separated by commas (port 2379 when left out).
    /// </summary>
    /// <exception cref="LaunchException">The text holds no endpoint or a malformed one.</exception>
    public static IReadOnlyList<Uri> ParseEndpoints(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var endpoints = new List<Uri>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string url = part.Contains("://", StringComparison.Ordinal) ? part : "http://" + part;
            if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) || uri.Host.Length == 0)
            {
                throw new LaunchException($"\"{part}\" is not an etcd endpoint; expected HOST[:PORT] or http://HOST:PORT.");
            }
            if (!part.Contains("://", StringComparison.Ordinal) && !HasExplicitPort(part))
            {
                uri = new UriBuilder(uri) { Port = DefaultPort }.Uri;
            }
            endpoints.Add(new Uri(uri.GetLeftPart(UriPartial.Authority)));
        }
        return endpoints.Count > 0 ? endpoints : throw new LaunchException($"\"{text}\" names no etcd endpoint; expected HOST[:PORT][,HOST[:PORT]…].");
    }

    private static bool HasExplicitPort(string hostPort)
    {
        int colon = hostPort.LastIndexOf(':');
        int bracket = hostPort.LastIndexOf(']');
        return colon > bracket && int.TryParse(hostPort.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _);
    }
}
