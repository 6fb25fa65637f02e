using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch.autograd;

namespace Kiln.Distributed;

/// <summary>
/// Overlap with backward. TorchSharp has no tensor or gradient-accumulation hooks, so readiness is observed per hooked
/// module (a block, or a leaf; see <see cref="RegisterHooks"/>): a forward pre-hook passes the module's input through
/// <see cref="DdpReadyMarker"/>, an identity autograd function whose node is created before any of the module's own nodes. Autograd runs ready nodes with the highest
/// sequence number first and gradient accumulation before anything else, so when the marker's backward runs, the
/// module's parameter gradients have been accumulated.
/// </summary>
public sealed partial class DistributedDataParallel
{
    /// <summary>
    /// Per module, how to remove the pre-hook of the wrapper that hooked it last: wrapping a module again retires the
    /// earlier wrapper's hooks, which would otherwise launch collectives of their own during backward.
    /// </summary>
    private static readonly ConditionalWeakTable<torch.nn.Module, Action> s_hookRemovers = [];

    /// <summary>
    /// Per wrapped module, how to remove every pre-hook its last wrapper registered: a new wrapper with another bucket
    /// cap may hook other submodules than the earlier one did.
    /// </summary>
    private static readonly ConditionalWeakTable<torch.nn.Module, Action> s_wrapperHookRemovers = [];

    private readonly List<Action> _hookRemovers = [];

    /// <summary>How many submodules carry a readiness marker (blocks, or leaves too large for one bucket).</summary>
    internal int HookedModules => _modules.Count;

    private readonly List<ModuleState> _modules = [];

    /// <summary>For each parameter, the index in <see cref="_modules"/> of the hooked leaf module owning it, or −1.</summary>
    private int[] _owners = [];

    /// <summary>Bumped whenever module states are reset, so that markers of an older forward are ignored.</summary>
    private int _generation;

    private Exception? _backwardError;

    /// <summary>
    /// The gradient wrappers TorchSharp made for the markers' backward. On CUDA, libtorch runs backward on its own
    /// device thread, outside any dispose scope, so nothing else would free them before the garbage collector does —
    /// holding activation-sized GPU memory per marker per step. They are disposed once that backward is over.
    /// </summary>
    private readonly List<torch.Tensor> _markerGradients = [];

    /// <summary>
    /// Hooks, below the wrapped module, the outermost submodules that take and return one tensor and whose parameters
    /// fit in one bucket (a transformer block, say), and leaf modules that do not fit; the wrapped module itself only
    /// when it has no children. One marker per block instead of one per leaf: each marker is a managed call in forward
    /// and another in backward, and a bucket cannot launch before its last parameter is ready anyway, so readiness finer
    /// than a bucket buys nothing. A parameter outside every hooked module has no owner and its bucket is launched by
    /// <see cref="SynchronizeGradients"/>.
    /// </summary>
    private void RegisterHooks()
    {
        _owners = new int[_parameters.Length];
        Array.Fill(_owners, -1);
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _parameters.Length; i++)
        {
            index[_parameters[i].Name] = i;
        }
        if (s_wrapperHookRemovers.TryGetValue(Module, out Action? retireEarlierWrapper))
        {
            retireEarlierWrapper();
        }
        s_wrapperHookRemovers.AddOrUpdate(Module, () => _hookRemovers.ForEach(remove => remove()));
        if (Module.children().Any())
        {
            foreach ((string name, torch.nn.Module child) in Module.named_children())
            {
                HookOutermost(name, child, index);
            }
        }
        else
        {
            Hook("", Module, index);
        }
    }

    private void HookOutermost(string name, torch.nn.Module module, Dictionary<string, int> index)
    {
        bool leaf = !module.children().Any();
        if (module is torch.nn.Module<torch.Tensor, torch.Tensor> && (leaf || GradientBytes(module) <= BucketCapBytes))
        {
            Hook(name, module, index);
            return;
        }
        foreach ((string childName, torch.nn.Module child) in module.named_children())
        {
            HookOutermost(name + "." + childName, child, index);
        }
    }

    private static long GradientBytes(torch.nn.Module module) =>
        module.parameters().Where(p => p.requires_grad).Sum(p => p.numel() * p.element_size());

    /// <summary>Makes <paramref name="module"/> the owner of every parameter under it and hooks its forward.</summary>
    private void Hook(string name, torch.nn.Module module, Dictionary<string, int> index)
    {
        var owned = new List<int>();
        foreach ((string local, _) in module.named_parameters())
        {
            if (index.TryGetValue(name.Length == 0 ? local : name + "." + local, out int i))
            {
                owned.Add(i);
            }
        }
        if (owned.Count == 0 || module is not torch.nn.Module<torch.Tensor, torch.Tensor> hookable)
        {
            return;
        }
        var state = new ModuleState(this);
        foreach (int i in owned)
        {
            _owners[i] = _modules.Count;
        }
        _modules.Add(state);
        if (s_hookRemovers.TryGetValue(module, out Action? removeEarlier))
        {
            removeEarlier();
        }
        var remover = hookable.register_forward_pre_hook((_, input) => state.BeforeForward(input));
        s_hookRemovers.AddOrUpdate(module, remover.remove);
        _hookRemovers.Add(remover.remove);
    }

    private void EndNoSync()
    {
        lock (_stateLock)
        {
            _noSyncDepth--;
            // Backward of the micro-batches inside the scope has run: their gradients are complete whatever the
            // next micro-batch calls, and markers still pending from them must not count any more.
            if (_noSyncDepth == 0)
            {
                ResetModuleStates();
            }
        }
    }

    private void ResetModuleStates()
    {
        DisposeMarkerGradients();
        _generation++;
        foreach (ModuleState state in _modules)
        {
            state.Pending = 0;
            state.Called = false;
            state.Unhookable = false;
        }
    }

    /// <summary>Frees the markers' gradient wrappers; only once the backward that made them has returned.</summary>
    private void DisposeMarkerGradients()
    {
        foreach (torch.Tensor gradient in _markerGradients)
        {
            gradient.Dispose();
        }
        _markerGradients.Clear();
    }

    /// <summary>Launches, in bucket order, every bucket whose parameters' owning modules have all finished backward.</summary>
    private void LaunchReadyBuckets()
    {
        while (_nextBucket < _buckets.Length && _buckets[_nextBucket].Parameters.All(IsReady))
        {
            LaunchBucket(_nextBucket++);
            _launchedDuringBackward++;
        }
    }

    private bool IsReady(int parameter)
    {
        int owner = _owners[parameter];
        return owner >= 0 && _modules[owner] is { Called: true, Pending: 0, Unhookable: false };
    }

    /// <summary>What the hooks know of one leaf module since the last synchronisation (or the end of a NoSync scope).</summary>
    private sealed class ModuleState(DistributedDataParallel owner)
    {
        /// <summary>Forward calls whose marker has not run its backward yet.</summary>
        public int Pending { get; set; }

        /// <summary>Whether a forward went through <c>call</c> with gradients enabled.</summary>
        public bool Called { get; set; }

        /// <summary>Whether a forward's input did not require a gradient: no marker runs, so readiness is never seen.</summary>
        public bool Unhookable { get; set; }

        public torch.Tensor BeforeForward(torch.Tensor input)
        {
            if (!torch.is_grad_enabled())
            {
                return input;
            }
            int generation;
            lock (owner._stateLock)
            {
                // A forward starts only after any earlier backward has returned.
                owner.DisposeMarkerGradients();
                if (owner._nextBucket > 0)
                {
                    throw new InvalidOperationException("DistributedDataParallel: a forward with gradients enabled after the last backward already launched gradient all-reduces; call SynchronizeGradients() after each backward, or run the backward of earlier micro-batches inside NoSync().");
                }
                Called = true;
                if (!input.requires_grad)
                {
                    Unhookable = true;
                    return input;
                }
                Pending++;
                generation = owner._generation;
            }
            return DdpReadyMarker.apply(input, new Marker(this, generation));
        }

        /// <summary>From the marker's backward, on an autograd thread; must not throw into native code.</summary>
        public void AfterBackward(int generation, torch.Tensor gradient)
        {
            lock (owner._stateLock)
            {
                owner._markerGradients.Add(gradient);
                if (generation != owner._generation || owner._backwardError is not null)
                {
                    return;
                }
                Pending--;
                if (owner._noSyncDepth > 0)
                {
                    return;
                }
                try
                {
                    owner.LaunchReadyBuckets();
                }
#pragma warning disable CA1031 // an exception must not unwind through libtorch; SynchronizeGradients rethrows it
                catch (Exception e)
#pragma warning restore CA1031
                {
                    owner._backwardError = e;
                }
            }
        }
    }

    /// <summary>What the marker carries from forward to backward.</summary>
    private sealed record Marker(ModuleState Module, int Generation);

    /// <summary>Identity on a module's input whose backward tells the module's state that its gradients are complete.</summary>
    private sealed class DdpReadyMarker : SingleTensorFunction<DdpReadyMarker>
    {
        public override string Name => nameof(DdpReadyMarker);

        public override torch.Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("marker", vars[1]);
            var input = (torch.Tensor)vars[0];
            return input.view_as(input);
        }

        public override List<torch.Tensor> backward(AutogradContext ctx, torch.Tensor grad_output)
        {
            if (ctx.get_data("marker") is Marker marker)
            {
                marker.Module.AfterBackward(marker.Generation, grad_output);
            }
            return [grad_output, null!];
        }
    }
}
