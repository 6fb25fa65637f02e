using System.Globalization;
using System.Text;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// An in-process <see cref="IKeyValueStore"/>: the state behind <see cref="TcpStoreServer"/>, and the store of a
/// single-node agent (<c>--standalone</c>, static with one node) or of tests.
/// </summary>
/// <remarks>Thread-safe. Counters are stored as their decimal text, as torch's TCPStore does.</remarks>
internal sealed class MemoryKeyValueStore : IKeyValueStore
{
    private readonly Dictionary<string, byte[]> _values = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The number of keys set.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _values.Count;
            }
        }
    }

    /// <inheritdoc/>
    public Task SetAsync(string key, byte[] value, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        lock (_gate)
        {
            _values[key] = [.. value];
            SignalLocked();
        }
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        lock (_gate)
        {
            return Task.FromResult(_values.TryGetValue(key, out byte[]? value) ? (byte[]?)[.. value] : null);
        }
    }

    /// <inheritdoc/>
    public Task<long> AddAsync(string key, long amount, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        lock (_gate)
        {
            long current = 0;
            if (_values.TryGetValue(key, out byte[]? value)
                && !long.TryParse(Encoding.ASCII.GetString(value), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out current))
            {
                return Task.FromException<long>(new InvalidOperationException($"Key \"{key}\" does not hold an integer counter."));
            }
            long next = checked(current + amount);
            _values[key] = Encoding.ASCII.GetBytes(next.ToString(CultureInfo.InvariantCulture));
            SignalLocked();
            return Task.FromResult(next);
        }
    }

    /// <inheritdoc/>
    public Task<byte[]> CompareSetAsync(string key, byte[]? expected, byte[] desired, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(desired);
        lock (_gate)
        {
            bool exists = _values.TryGetValue(key, out byte[]? current);
            bool matches = expected is null ? !exists : exists && current!.AsSpan().SequenceEqual(expected);
            if (matches)
            {
                _values[key] = [.. desired];
                SignalLocked();
                return Task.FromResult<byte[]>([.. desired]);
            }
            // torch's TCPStore returns the current value, or the expected one when the key is missing.
            return Task.FromResult<byte[]>(exists ? [.. current!] : [.. expected!]);
        }
    }

    /// <inheritdoc/>
    public async Task WaitAsync(IReadOnlyList<string> keys, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(keys);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (keys.All(_values.ContainsKey))
                {
                    return;
                }
                changed = _changed.Task;
            }
            try
            {
                await changed.WaitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"Keys {string.Join(", ", keys)} were not all set within {timeout.TotalSeconds:0.###} s.");
            }
        }
    }

    /// <inheritdoc/>
    public Task<bool> DeleteAsync(string key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        lock (_gate)
        {
            bool removed = _values.Remove(key);
            if (removed)
            {
                SignalLocked();
            }
            return Task.FromResult(removed);
        }
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private void SignalLocked()
    {
        TaskCompletionSource changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }
}
