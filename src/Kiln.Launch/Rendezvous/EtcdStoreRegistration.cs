using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Kiln.Launch.Rendezvous;

/// <summary>Registers <c>--rdzv-backend etcd</c> with <see cref="RendezvousStores"/> when Kiln.Launch loads.</summary>
internal static class EtcdStoreRegistration
{
    /// <summary>
    /// The <c>etcd</c> backend: <c>--rdzv-endpoint</c> is one or more <c>HOST[:PORT]</c> (port 2379 by default); the
    /// store adds no prefix because the rendezvous already writes <c>/kiln/rdzv/RUN_ID/…</c>.
    /// </summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255:The 'ModuleInitializer' attribute should not be used in libraries", Justification = "Registers a built-in backend of this library with its own registry; no user code runs.")]
    internal static void Register() =>
        RendezvousStores.Register("etcd", endpoint => new EtcdStore(new EtcdStoreOptions { Endpoints = EtcdStoreOptions.ParseEndpoints(endpoint) }));
}
