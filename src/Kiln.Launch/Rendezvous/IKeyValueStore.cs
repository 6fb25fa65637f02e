namespace Kiln.Launch.Rendezvous;

/// <summary>
/// The key-value store rendezvous and process groups share (torch.distributed's Store): the embedded TCP store of the
/// agent, or etcd. Implementations are thread-safe.
/// </summary>
public interface IKeyValueStore : IAsyncDisposable
{
    /// <summary>Sets a key.</summary>
    public Task SetAsync(string key, byte[] value, CancellationToken cancellationToken);

    /// <summary>The key's value, or null when it is not set.</summary>
    public Task<byte[]?> GetAsync(string key, CancellationToken cancellationToken);

    /// <summary>Adds to an integer counter (missing = 0) and returns the new value.</summary>
    public Task<long> AddAsync(string key, long amount, CancellationToken cancellationToken);

    /// <summary>Sets the key to <paramref name="desired"/> if its value is <paramref name="expected"/> (null: not set); returns the value after the call.</summary>
    public Task<byte[]> CompareSetAsync(string key, byte[]? expected, byte[] desired, CancellationToken cancellationToken);

    /// <summary>Waits until every key is set, or throws <see cref="TimeoutException"/> after <paramref name="timeout"/>.</summary>
    public Task WaitAsync(IReadOnlyList<string> keys, TimeSpan timeout, CancellationToken cancellationToken);

    /// <summary>Deletes a key; false when it was not set.</summary>
    public Task<bool> DeleteAsync(string key, CancellationToken cancellationToken);
}
