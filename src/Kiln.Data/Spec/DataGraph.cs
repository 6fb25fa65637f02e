namespace Kiln.Data;

/// <summary>
/// A checked graph spec with the registry its functions come from. Building checks everything — node types,
/// inputs, cycles, parameters, item types — and lists every problem at once, so a bad spec fails at load,
/// never mid-epoch. <see cref="CreateRoot{T}"/> makes a fresh set of nodes (one per worker copy).
/// </summary>
public sealed class DataGraph
{
    private DataGraph(GraphSpec spec, NodeRegistry registry, Type itemType)
    {
        Spec = spec;
        Registry = registry;
        ItemType = itemType;
    }

    /// <summary>The spec.</summary>
    public GraphSpec Spec { get; }

    /// <summary>The registry of node types and functions.</summary>
    public NodeRegistry Registry { get; }

    /// <summary>The type of the items the output node yields.</summary>
    public Type ItemType { get; }

    /// <summary>Checks a spec and keeps it with its registry.</summary>
    /// <exception cref="GraphSpecException">Every problem found, each naming the node and parameter.</exception>
    public static DataGraph Build(GraphSpec spec, NodeRegistry registry, string source = "spec")
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(registry);
        Node root = Instantiate(spec, registry, source);
        Type itemType = root.ItemType;
        root.Dispose();
        return new DataGraph(spec, registry, itemType);
    }

    /// <summary>Makes a fresh set of nodes and returns the output node.</summary>
    /// <remarks>The caller owns the nodes and disposes them through the returned root.</remarks>
    /// <exception cref="InvalidCastException">The graph yields another item type.</exception>
    public Node<T> CreateRoot<T>() =>
        Instantiate(Spec, Registry, "spec") as Node<T>
        ?? throw new InvalidCastException($"the graph yields {NodeBuildContext.Pretty(ItemType)}, not {NodeBuildContext.Pretty(typeof(T))}");

    /// <summary>Makes a fresh set of nodes and returns the output node, untyped.</summary>
    public Node CreateRoot() => Instantiate(Spec, Registry, "spec");

    private static Node Instantiate(GraphSpec spec, NodeRegistry registry, string source)
    {
        var errors = new List<string>();
        var byId = new Dictionary<string, NodeSpec>(StringComparer.Ordinal);
        foreach (NodeSpec node in spec.Nodes)
        {
            if (!byId.TryAdd(node.Id, node))
            {
                errors.Add($"node '{node.Id}': the id is used twice");
            }
            if (!registry.TryGetNodeType(node.Type, out _))
            {
                errors.Add($"node '{node.Id}': unknown type \"{node.Type}\" (known: {string.Join(", ", registry.NodeTypes.Order())})");
            }
            foreach (string input in node.Inputs)
            {
                if (!byId.ContainsKey(BaseId(input)) && !spec.Nodes.Any(n => n.Id == BaseId(input)))
                {
                    errors.Add($"node '{node.Id}': input '{input}' is not a node of this spec");
                }
            }
        }
        if (!byId.ContainsKey(spec.Output))
        {
            errors.Add($"\"output\": '{spec.Output}' is not a node of this spec");
        }
        foreach (string cycle in FindCycles(spec, byId))
        {
            errors.Add(cycle);
        }
        if (errors.Count > 0)
        {
            throw new GraphSpecException(source, errors);
        }

        var built = new Dictionary<string, Node?>(StringComparer.Ordinal);
        Node? Build(string reference)
        {
            string id = BaseId(reference);
            if (!built.TryGetValue(id, out Node? node))
            {
                NodeSpec nodeSpec = byId[id];
                Node?[] inputs = [.. nodeSpec.Inputs.Select(Build)];
                node = null;
                if (inputs.All(i => i is not null))
                {
                    var parameters = new NodeParameters(id, nodeSpec.Parameters, errors);
                    registry.TryGetNodeType(nodeSpec.Type, out Func<NodeBuildContext, Node?> factory);
                    int before = errors.Count;
                    try
                    {
                        node = factory(new NodeBuildContext(nodeSpec, inputs!, parameters, registry));
                    }
                    catch (ArgumentException ex)
                    {
                        parameters.Error(ex.Message);
                    }
                    ErrorPolicy policy = parameters.OnError;
                    if (node is not null)
                    {
                        node.OnError = policy;
                    }
                    parameters.CheckUnknown();
                    if (errors.Count > before)
                    {
                        node?.Dispose();
                        node = null;
                    }
                }
                built[id] = node;
            }
            if (node is IPorts ports && reference.Contains(':', StringComparison.Ordinal))
            {
                string port = reference[(reference.IndexOf(':', StringComparison.Ordinal) + 1)..];
                Node? output = ports.Port(port);
                if (output is null)
                {
                    errors.Add($"input '{reference}': node '{id}' has no output '{port}'");
                }
                return output;
            }
            if (reference.Contains(':', StringComparison.Ordinal) && node is not null)
            {
                errors.Add($"input '{reference}': node '{id}' has a single output; refer to it as '{id}'");
                return null;
            }
            return node;
        }
        Node? root = Build(spec.Output);
        foreach (NodeSpec unused in spec.Nodes.Where(n => !built.ContainsKey(n.Id)))
        {
            errors.Add($"node '{unused.Id}': not connected to the output '{spec.Output}'");
        }
        if (root is not null)
        {
            CheckForkThreads(root, errors);
        }
        if (errors.Count > 0 || root is null)
        {
            foreach (Node? node in built.Values)
            {
                node?.Dispose();
            }
            throw new GraphSpecException(source, errors);
        }
        return root;
    }

    /// <summary>
    /// The outputs of a fork or demux share one reader, so they must be read on one thread: a node with threads
    /// of its own (map with threads, prefetch) may read some of them only if it reads all of them.
    /// </summary>
    private static void CheckForkThreads(Node root, List<string> errors)
    {
        List<Node> all = Closure([root]);
        foreach (Node threaded in all.Where(n => n.OwnsUpstream && n is not Nodes.ForkOutputNodeMarker))
        {
            List<Node> inside = Closure(threaded.Inputs);
            foreach (IGrouping<object, Node> hub in all.OfType<Nodes.ForkOutputNodeMarker>().Cast<Node>().GroupBy(o => ((Nodes.ForkOutputNodeMarker)o).Hub))
            {
                Node[] read = [.. hub.Where(o => inside.Contains(o))];
                if (read.Length > 0 && read.Length < hub.Count())
                {
                    string fork = read[0].Id[..read[0].Id.IndexOf(':', StringComparison.Ordinal)];
                    errors.Add($"node '{threaded.Id}' reads '{string.Join("', '", read.Select(o => o.Id))}' on threads of its own while '{string.Join("', '", hub.Except(read).Select(o => o.Id))}' is read elsewhere; "
                        + $"the outputs of '{fork}' share one reader: put the threads after the outputs rejoin");
                }
            }
        }
    }

    private static List<Node> Closure(IEnumerable<Node> starts)
    {
        var seen = new List<Node>();
        var stack = new Stack<Node>(starts);
        while (stack.TryPop(out Node? node))
        {
            if (seen.Contains(node))
            {
                continue;
            }
            seen.Add(node);
            foreach (Node input in node.Inputs)
            {
                stack.Push(input);
            }
        }
        return seen;
    }

    private static string BaseId(string reference)
    {
        int colon = reference.IndexOf(':', StringComparison.Ordinal);
        return colon < 0 ? reference : reference[..colon];
    }

    private static List<string> FindCycles(GraphSpec spec, Dictionary<string, NodeSpec> byId)
    {
        var state = new Dictionary<string, int>(StringComparer.Ordinal); // 1 visiting, 2 done
        var cycles = new List<string>();
        void Visit(string id, Stack<string> path)
        {
            if (!byId.TryGetValue(id, out NodeSpec? node) || state.GetValueOrDefault(id) == 2)
            {
                return;
            }
            if (state.GetValueOrDefault(id) == 1)
            {
                cycles.Add($"cycle: {string.Join(" -> ", path.Reverse().SkipWhile(p => p != id))} -> {id}");
                return;
            }
            state[id] = 1;
            path.Push(id);
            foreach (string input in node.Inputs)
            {
                Visit(BaseId(input), path);
            }
            path.Pop();
            state[id] = 2;
        }
        foreach (NodeSpec node in spec.Nodes)
        {
            Visit(node.Id, new Stack<string>());
        }
        return cycles;
    }
}

/// <summary>A node with several named outputs (fork, demux): inputs refer to them as "id:port".</summary>
internal interface IPorts
{
    /// <summary>The output node of a port, or null when there is no such port.</summary>
    public Node? Port(string port);
}
