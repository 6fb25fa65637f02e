using System.Globalization;
using System.Text;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// <see cref="IKeyValueStore"/> over etcd v3 (3.4 or newer) through its JSON gateway: every key lives under
/// <c>/kiln/rdzv/&lt;run_id&gt;/</c>; counters are ASCII decimal strings (as in torch's TCPStore); add and compare-set
/// are etcd transactions; waits watch the run's prefix.
/// </summary>
/// <remarks>
/// Thread-safe. Owns its <see cref="HttpClient"/> and, with <see cref="EtcdStoreOptions.LeaseTtl"/>, the keep-alive
/// loop of its lease; <see cref="DisposeAsync"/> stops both (the lease is not revoked: its keys expire one TTL later).
/// </remarks>
internal sealed class EtcdStore : IKeyValueStore
{
    private readonly EtcdStoreOptions _options;
    private readonly HttpClient _http;
    private readonly EtcdGateway _etcd;
    private readonly byte[] _prefix;
    private readonly byte[] _prefixEnd;
    private readonly SemaphoreSlim _leaseLock = new(1, 1);
    private readonly CancellationTokenSource _disposed = new();
    private long _lease;
    private Task? _keepAlive;

    /// <summary>Creates a store; nothing is sent to etcd until the first call.</summary>
    public EtcdStore(EtcdStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Endpoints);
        if (options.RunId is not null && (options.RunId.Length == 0 || options.RunId.Contains('/', StringComparison.Ordinal)))
        {
            throw new LaunchException($"The run id \"{options.RunId}\" is empty or holds a '/'; etcd keys are /kiln/rdzv/<run_id>/<key>.");
        }
        if (options.LeaseTtl is { } ttl && ttl < TimeSpan.FromSeconds(1))
        {
            throw new LaunchException($"An etcd lease TTL of {ttl.TotalSeconds} s is too short; etcd counts whole seconds (at least 1).");
        }
        _options = options;
        _http = new HttpClient(new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30) })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _etcd = new EtcdGateway(_http, options.Endpoints, options.RequestTimeout);
        _prefix = Encoding.UTF8.GetBytes(options.Prefix);
        _prefixEnd = _prefix.Length > 0 ? RangeEnd(_prefix) : [0];
    }

    /// <summary>The options the store was created with.</summary>
    public EtcdStoreOptions Options => _options;

    /// <inheritdoc />
    public async Task SetAsync(string key, byte[] value, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(value);
        long lease = await LeaseAsync(cancellationToken).ConfigureAwait(false);
        await _etcd.PutAsync(FullKey(key), value, lease, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        EtcdKeyValue? kv = await _etcd.GetAsync(FullKey(key), cancellationToken).ConfigureAwait(false);
        return kv?.Value;
    }

    /// <inheritdoc />
    /// <remarks>
    /// Optimistic: reads the counter, then writes the sum in a transaction that holds only if nobody wrote the key
    /// since (same modification revision); a lost race retries with the value the failed transaction read.
    /// </remarks>
    public async Task<long> AddAsync(string key, long amount, CancellationToken cancellationToken)
    {
        byte[] fullKey = FullKey(key);
        long lease = await LeaseAsync(cancellationToken).ConfigureAwait(false);
        EtcdKeyValue? current = await _etcd.GetAsync(fullKey, cancellationToken).ConfigureAwait(false);
        while (true)
        {
            long sum = checked((current is { } kv ? ParseCounter(key, kv.Value) : 0) + amount);
            var compare = current is { } existing
                ? EtcdGateway.CompareModRevision(fullKey, existing.ModRevision)
                : EtcdGateway.CompareMissing(fullKey);
            byte[] value = Encoding.ASCII.GetBytes(sum.ToString(CultureInfo.InvariantCulture));
            var put = new System.Text.Json.Nodes.JsonObject { ["request_put"] = EtcdGateway.Put(fullKey, value, lease) };
            (bool succeeded, EtcdKeyValue? now) = await _etcd.TxnAsync(compare, put, fullKey, cancellationToken).ConfigureAwait(false);
            if (succeeded)
            {
                return sum;
            }
            current = now;
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// When the key is not set and <paramref name="expected"/> is not null, nothing changes and the result is
    /// <paramref name="expected"/> (torch's TCPStore does the same; so do Kiln's TCP and memory stores).
    /// </remarks>
    public async Task<byte[]> CompareSetAsync(string key, byte[]? expected, byte[] desired, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(desired);
        byte[] fullKey = FullKey(key);
        long lease = await LeaseAsync(cancellationToken).ConfigureAwait(false);
        var compare = expected is null ? EtcdGateway.CompareMissing(fullKey) : EtcdGateway.CompareValue(fullKey, expected);
        var put = new System.Text.Json.Nodes.JsonObject { ["request_put"] = EtcdGateway.Put(fullKey, desired, lease) };
        (bool succeeded, EtcdKeyValue? current) = await _etcd.TxnAsync(compare, put, fullKey, cancellationToken).ConfigureAwait(false);
        return succeeded ? desired : current?.Value ?? expected ?? [];
    }

    /// <inheritdoc />
    /// <remarks>
    /// Reads all keys in one snapshot; if some are missing, watches the run's prefix from the next revision until each
    /// missing key has been put, so no write between the read and the watch is lost.
    /// </remarks>
    public async Task WaitAsync(IReadOnlyList<string> keys, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keys);
        if (keys.Count == 0)
        {
            return;
        }
        byte[][] fullKeys = [.. keys.Select(FullKey)];
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            deadline.CancelAfter(timeout);
        }
        HashSet<string> missing = [];
        try
        {
            while (true)
            {
                (HashSet<string> present, long revision) = await _etcd.ExistAsync(fullKeys, deadline.Token).ConfigureAwait(false);
                missing = [.. fullKeys.Select(Convert.ToBase64String).Where(k => !present.Contains(k))];
                if (missing.Count == 0)
                {
                    return;
                }
                (byte[] from, byte[] to) = WatchRange(missing);
                await foreach (EtcdWatchEvent e in _etcd.WatchAsync(from, to, revision + 1, deadline.Token).ConfigureAwait(false))
                {
                    if (!e.IsDelete && missing.Remove(Convert.ToBase64String(e.Key)) && missing.Count == 0)
                    {
                        return;
                    }
                }
                // The watch ended (canceled by the server): read again and watch from the new revision.
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            IEnumerable<string> names = missing.Select(k => Encoding.UTF8.GetString(Convert.FromBase64String(k))[_prefix.Length..]);
            throw new TimeoutException($"Timed out after {timeout.TotalSeconds:0.###} s waiting for etcd keys under {_options.Prefix}: {string.Join(", ", names)} not set.");
        }
        catch (TimeoutException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"Timed out after {timeout.TotalSeconds:0.###} s waiting for etcd keys under {_options.Prefix}.");
        }
    }

    /// <inheritdoc />
    public async Task<bool> DeleteAsync(string key, CancellationToken cancellationToken) =>
        await _etcd.DeleteAsync(FullKey(key), null, cancellationToken).ConfigureAwait(false) > 0;

    /// <summary>Deletes every key of the run (the whole prefix); returns how many were deleted.</summary>
    /// <exception cref="InvalidOperationException">The store has no run id, hence no prefix of its own.</exception>
    public Task<long> DeleteAllAsync(CancellationToken cancellationToken) =>
        _prefix.Length > 0
            ? _etcd.DeleteAsync(_prefix, _prefixEnd, cancellationToken)
            : throw new InvalidOperationException("This etcd store has no run id: deleting all its keys would delete every key in etcd.");

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (_disposed.IsCancellationRequested)
        {
            return;
        }
        await _disposed.CancelAsync().ConfigureAwait(false);
        if (_keepAlive is { } loop)
        {
            try
            {
                await loop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Stopped by dispose.
            }
        }
        _http.Dispose();
        _leaseLock.Dispose();
        _disposed.Dispose();
    }

    /// <summary>The exclusive end of the range of keys that start with <paramref name="prefix"/> (etcd's prefix rule).</summary>
    internal static byte[] RangeEnd(byte[] prefix)
    {
        byte[] end = (byte[])prefix.Clone();
        for (int i = end.Length - 1; i >= 0; i--)
        {
            if (end[i] < 0xFF)
            {
                end[i]++;
                return end[..(i + 1)];
            }
        }
        return [0];
    }

    /// <summary>
    /// The narrowest prefix range that holds every missing key (their longest common prefix), so that a wait watches
    /// only its own keys' neighbourhood, not a whole shared etcd; [\0, \0) — every key — when they share nothing.
    /// </summary>
    internal static (byte[] From, byte[] To) WatchRange(IReadOnlyCollection<string> base64Keys)
    {
        byte[]? common = null;
        foreach (string encoded in base64Keys)
        {
            byte[] key = Convert.FromBase64String(encoded);
            if (common is null)
            {
                common = key;
                continue;
            }
            int n = 0;
            while (n < common.Length && n < key.Length && common[n] == key[n])
            {
                n++;
            }
            common = common[..n];
        }
        return common is { Length: > 0 } ? (common, RangeEnd(common)) : ([0], [0]);
    }

    private byte[] FullKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        byte[] full = new byte[_prefix.Length + Encoding.UTF8.GetByteCount(key)];
        _prefix.CopyTo(full, 0);
        Encoding.UTF8.GetBytes(key, full.AsSpan(_prefix.Length));
        return full;
    }

    private static long ParseCounter(string key, byte[] value) =>
        long.TryParse(Encoding.ASCII.GetString(value), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n)
            ? n
            : throw new InvalidOperationException($"The etcd key \"{key}\" holds {value.Length} bytes that are not a decimal integer; add needs a counter.");

    /// <summary>The store's lease (granted on first use and kept alive), or 0 without <see cref="EtcdStoreOptions.LeaseTtl"/>.</summary>
    private async ValueTask<long> LeaseAsync(CancellationToken cancellationToken)
    {
        if (_options.LeaseTtl is not { } ttl)
        {
            return 0;
        }
        long lease = Volatile.Read(ref _lease);
        if (lease != 0)
        {
            return lease;
        }
        await _leaseLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_lease == 0)
            {
                long seconds = (long)Math.Ceiling(ttl.TotalSeconds);
                Volatile.Write(ref _lease, await _etcd.GrantLeaseAsync(seconds, cancellationToken).ConfigureAwait(false));
                _keepAlive ??= KeepAliveLoopAsync(TimeSpan.FromSeconds(seconds / 3.0), _disposed.Token);
            }
            return _lease;
        }
        finally
        {
            _leaseLock.Release();
        }
    }

    /// <summary>Renews the lease every third of its TTL; an expired lease is forgotten so that the next write grants a new one.</summary>
    private async Task KeepAliveLoopAsync(TimeSpan period, CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(period);
        while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
        {
            long lease = Volatile.Read(ref _lease);
            if (lease == 0)
            {
                continue;
            }
            try
            {
                if (await _etcd.KeepAliveAsync(lease, cancellationToken).ConfigureAwait(false) <= 0)
                {
                    Interlocked.CompareExchange(ref _lease, 0, lease);
                }
            }
            catch (Exception ex) when (ex is LaunchException or TimeoutException or HttpRequestException)
            {
                // etcd unreachable for a moment: the next tick tries again, well within the TTL.
            }
        }
    }
}
