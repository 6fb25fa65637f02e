using System.Collections.Concurrent;

namespace Kiln.Launch.Rendezvous;

/// <summary>
/// Store backends the agent's rendezvous can run over, by <c>--rdzv-backend</c> name. The agent itself handles
/// <c>c10d</c> (its embedded TCP store) and <c>static</c>; others register a factory here, e.g.
/// <c>RendezvousStores.Register("etcd", endpoint =&gt; new EtcdKeyValueStore(endpoint))</c>.
/// </summary>
/// <remarks>Thread-safe. The factory gets the <c>--rdzv-endpoint</c> text (<c>HOST:PORT</c>, possibly a comma-separated
/// list) and returns a store the agent owns and disposes. Keys the rendezvous uses start with <c>/kiln/rdzv/RUN_ID/</c>.</remarks>
internal static class RendezvousStores
{
    private static readonly ConcurrentDictionary<string, Func<string, IKeyValueStore>> s_factories = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>The names registered so far.</summary>
    public static IReadOnlyCollection<string> Names => [.. s_factories.Keys.Order(StringComparer.Ordinal)];

    /// <summary>Registers (or replaces) the store factory of a backend name.</summary>
    public static void Register(string backend, Func<string, IKeyValueStore> factory)
    {
        ArgumentException.ThrowIfNullOrEmpty(backend);
        ArgumentNullException.ThrowIfNull(factory);
        s_factories[backend] = factory;
    }

    /// <summary>The factory registered for <paramref name="backend"/>, if any.</summary>
    public static bool TryGet(string backend, out Func<string, IKeyValueStore> factory)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return s_factories.TryGetValue(backend, out factory!);
    }
}
