namespace Kiln.Data;

/// <summary>What a node type's factory gets: the node's spec, its built inputs, and the registry for functions.</summary>
internal sealed record NodeBuildContext(NodeSpec Spec, Node[] Inputs, NodeParameters Parameters, NodeRegistry Registry)
{
    /// <summary>Records a problem with this node.</summary>
    public void Error(string message) => Parameters.Error(message);

    /// <summary>Makes a generic node type closed over <paramref name="types"/>.</summary>
#pragma warning disable CA1822 // an instance method reads better at the call sites: c.Make(...)
    public Node? Make(Type generic, Type[] types, params object?[] args)
    {
        if (Parameters.Failed)
        {
            return null;
        }
        try
        {
            return (Node)Activator.CreateInstance(generic.MakeGenericType(types), args)!;
        }
        catch (System.Reflection.TargetInvocationException ex) when (ex.InnerException is ArgumentException inner)
        {
            throw inner;
        }
    }
#pragma warning restore CA1822

    /// <summary>The registered function the parameter <paramref name="parameter"/> names, checked against the input item type.</summary>
    public Delegate? Function(string parameter, Type openDelegate, Type input)
    {
        string? name = Parameters.String(parameter, required: true);
        if (name is null)
        {
            return null;
        }
        if (!Registry.TryGetFunction(name, out Delegate? function))
        {
            Error($"parameter \"{parameter}\": no function named \"{name}\" is registered (registered: {string.Join(", ", Registry.FunctionNames.Order())})");
            return null;
        }
        Type type = function.GetType();
        if (!type.IsGenericType || type.GetGenericTypeDefinition() != openDelegate)
        {
            Error($"parameter \"{parameter}\": function \"{name}\" is a {Pretty(type)}, not a {Pretty(openDelegate)}");
            return null;
        }
        Type argument = type.GetGenericArguments()[0];
        if (!argument.IsAssignableFrom(input))
        {
            Error($"parameter \"{parameter}\": function \"{name}\" takes {Pretty(argument)}, but the input yields {Pretty(input)}");
            return null;
        }
        return function;
    }

    internal static string Pretty(Type type) => type.IsGenericType
        ? $"{type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", type.GetGenericArguments().Select(Pretty))}>"
        : type.Name;
}

/// <summary>
/// The node types a graph spec may name, and the user functions (maps, filters, keys) its nodes refer to by
/// name. <see cref="CreateDefault"/> has every built-in node type; add functions before building graphs.
/// </summary>
/// <remarks>Register everything before building; afterwards the registry is only read, from any thread.</remarks>
public sealed class NodeRegistry
{
    private readonly Dictionary<string, Func<NodeBuildContext, Node?>> _types = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Delegate> _functions = new(StringComparer.Ordinal);
    private HttpClient? _http;
    private Remote.S3StoreOptions? _s3;
    private Nodes.StorageAccess? _storage;

    private NodeRegistry()
    {
    }

    /// <summary>A registry with every built-in node type and no user functions.</summary>
    public static NodeRegistry CreateDefault()
    {
        var registry = new NodeRegistry();
        BuiltInNodes.Register(registry);
        return registry;
    }

    /// <summary>Reads http(s) locations with this client instead of one the registry creates.</summary>
    public NodeRegistry UseHttpClient(HttpClient client)
    {
        ArgumentNullException.ThrowIfNull(client);
        _http = client;
        _storage = null;
        return this;
    }

    /// <summary>Reads s3:// locations from this S3-compatible endpoint (with these credentials).</summary>
    public NodeRegistry UseS3(Remote.S3StoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _s3 = options;
        _storage = null;
        return this;
    }

    internal Nodes.StorageAccess Storage => _storage ??= new Nodes.StorageAccess(_http, _s3, null);

    /// <summary>The node type names.</summary>
    public IEnumerable<string> NodeTypes => _types.Keys;

    /// <summary>The registered function names.</summary>
    public IEnumerable<string> FunctionNames => _functions.Keys;

    /// <summary>Registers a function for map nodes: <c>{"type": "map", "params": {"fn": name}}</c>.</summary>
    public NodeRegistry AddMap<TIn, TOut>(string name, Func<TIn, TOut> map) => AddFunction(name, map);

    /// <summary>Registers a predicate for filter nodes.</summary>
    public NodeRegistry AddFilter<T>(string name, Func<T, bool> keep) => AddFunction(name, keep);

    /// <summary>Registers a function for flat-map nodes: each input item becomes any number of items.</summary>
    public NodeRegistry AddFlatMap<TIn, TOut>(string name, Func<TIn, IEnumerable<TOut>> expand) => AddFunction(name, expand);

    /// <summary>Registers an integer key: an item's length (bucket batching) or its branch (demux).</summary>
    public NodeRegistry AddKey<T>(string name, Func<T, int> key) => AddFunction(name, key);

    internal bool TryGetFunction(string name, out Delegate function) => _functions.TryGetValue(name, out function!);

    internal void AddNodeType(string type, Func<NodeBuildContext, Node?> factory) => _types.Add(type, factory);

    internal bool TryGetNodeType(string type, out Func<NodeBuildContext, Node?> factory) => _types.TryGetValue(type, out factory!);

    private NodeRegistry AddFunction(string name, Delegate function)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(function);
        if (!_functions.TryAdd(name, function))
        {
            throw new ArgumentException($"a function named \"{name}\" is already registered", nameof(name));
        }
        return this;
    }
}
