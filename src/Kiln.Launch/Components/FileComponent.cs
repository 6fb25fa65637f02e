using System.Globalization;
using System.Text.RegularExpressions;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Components;

/// <summary>A declared parameter of a component file.</summary>
internal sealed record ComponentParameter(string Name, string Type, string? Default, bool Required, string Help, bool Remainder);

/// <summary>
/// A component written as a JSON or YAML file: declared parameters and an app template whose strings hold
/// <c>{{param}}</c> placeholders. See <c>docs/launch-components.md</c> for the format.
/// </summary>
internal sealed partial class FileComponent : IComponent
{
    private static readonly string[] s_extensions = [".json", ".yaml", ".yml"];
    private static readonly string[] s_types = ["string", "int", "float", "bool", "list"];
    private static readonly string[] s_topKeys = ["name", "description", "params", "roles", "metadata"];
    private static readonly string[] s_paramKeys = ["name", "type", "default", "required", "help", "remainder"];
    private static readonly string[] s_roleKeys =
        ["name", "entrypoint", "image", "args", "env", "num_replicas", "min_replicas", "resource", "max_retries", "retry_policy", "port_map", "mounts"];
    private static readonly string[] s_resourceKeys = ["cpu", "gpu", "memMB"];
    private static readonly string[] s_mountKeys = ["src", "dst", "readonly"];

    /// <summary>Placeholders every file may use besides its parameters.</summary>
    private static readonly string[] s_builtInPlaceholders = ["kiln", "cwd"];

    private readonly string _path;
    private readonly Dictionary<string, object?> _document;
    private readonly IReadOnlyList<ComponentParameter> _parameters;
    private readonly ComponentSyntax _syntax;

    private FileComponent(string path, string name, Dictionary<string, object?> document, IReadOnlyList<ComponentParameter> parameters)
    {
        _path = path;
        _document = document;
        _parameters = parameters;
        Name = name;
        Description = document.GetValueOrDefault("description") as string ?? $"Component file {path}.";
        ComponentParameter? remainder = parameters.FirstOrDefault(p => p.Remainder);
        _syntax = new ComponentSyntax(
            name,
            [.. parameters.Where(p => !p.Remainder).Select(ToOption)],
            remainder is null ? null : remainder.Name.ToUpperInvariant() + "…");
    }

    public string Name { get; }

    public string Description { get; }

    public string Usage => _syntax.Usage;

    /// <summary>True when a component name is a file path: it contains a slash or ends in <c>.json</c>, <c>.yaml</c> or <c>.yml</c>.</summary>
    public static bool IsPath(string component) =>
        component.Contains('/', StringComparison.Ordinal) || component.Contains('\\', StringComparison.Ordinal)
        || s_extensions.Any(e => component.EndsWith(e, StringComparison.OrdinalIgnoreCase));

    /// <summary>The component files in <c>.kiln/components/</c> under the working folder, by name; where one name has
    /// several files, <c>.json</c> wins over <c>.yaml</c> over <c>.yml</c>.</summary>
    public static IReadOnlyList<(string Name, string Path)> Discover(ComponentContext context)
    {
        string folder = Path.Combine(context.Resolve("."), ".kiln", "components");
        if (!Directory.Exists(folder))
        {
            return [];
        }
        var found = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (string extension in s_extensions)
        {
            foreach (string file in Directory.EnumerateFiles(folder, "*" + extension).Order(StringComparer.Ordinal))
            {
                if (file.EndsWith(extension, StringComparison.Ordinal))
                {
                    found.TryAdd(Path.GetFileNameWithoutExtension(file), file);
                }
            }
        }
        return [.. found.Select(p => (p.Key, p.Value))];
    }

    /// <summary>Reads and checks a component file.</summary>
    /// <param name="path">The file's absolute path.</param>
    /// <param name="name">The name the user gave (the path as written, or the name found in <c>.kiln/components/</c>).</param>
    /// <exception cref="LaunchException">The file cannot be read or does not describe a component; the message says where.</exception>
    public static FileComponent Load(string path, string name)
    {
        object? root = ComponentDocument.Read(path);
        var file = new FileChecker(path);
        Dictionary<string, object?> document = file.Map(root, "the file");
        file.Keys(document, s_topKeys, "the file");
        IReadOnlyList<ComponentParameter> parameters = ReadParameters(document.GetValueOrDefault("params"), file);
        if (document.TryGetValue("roles", out object? roles) is false || roles is null)
        {
            throw file.Error("has no roles (a list of roles with at least name and entrypoint)");
        }
        var known = new HashSet<string>(parameters.Select(p => p.Name).Concat(s_builtInPlaceholders), StringComparer.Ordinal);
        CheckPlaceholders(document, known, file, "");
        var component = new FileComponent(path, name, document, parameters);
        // A dry conversion checks the template's shape (keys, lists, maps) before anything is substituted.
        component.ToApp(static (text, _) => [text], file, context: null);
        return component;
    }

    public AppDef Build(IReadOnlyList<string> args, ComponentContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        ComponentArguments parsed = _syntax.Parse(args, context);
        var values = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal)
        {
            ["kiln"] = [context.KilnPath],
            ["cwd"] = [Path.GetFullPath(context.WorkingDirectory)],
        };
        var lists = new HashSet<string>(StringComparer.Ordinal);
        foreach (ComponentParameter parameter in _parameters)
        {
            if (parameter.Remainder)
            {
                values[parameter.Name] = parsed.Rest;
                lists.Add(parameter.Name);
                continue;
            }
            OptionSpec option = ToOption(parameter);
            switch (parameter.Type)
            {
                case "list":
                    values[parameter.Name] = parsed.List(option.Name);
                    lists.Add(parameter.Name);
                    break;
                case "bool":
                    values[parameter.Name] = [parsed.Flag(option.Name) ? "true" : "false"];
                    break;
                default:
                    string? value = parsed.Value(option.Name);
                    if (value is null)
                    {
                        // Optional, no default: an empty string.
                        values[parameter.Name] = [""];
                        break;
                    }
                    if (!HasType(value, parameter.Type))
                    {
                        throw _syntax.Error($"option {option.Display} is {Article(parameter.Type)} {parameter.Type}, not '{value}'");
                    }
                    values[parameter.Name] = [value];
                    break;
            }
        }
        return ToApp(
            (text, whole) =>
            {
                if (whole && Placeholder().Match(text) is { Success: true } only && only.Length == text.Length && lists.Contains(only.Groups[1].Value))
                {
                    return values[only.Groups[1].Value];
                }
                return [Placeholder().Replace(text, m => string.Join(',', values[m.Groups[1].Value]))];
            },
            new FileChecker(_path, Name, _syntax),
            context);
    }

    private static OptionSpec ToOption(ComponentParameter parameter)
    {
        string help = parameter.Help.Length > 0 ? parameter.Help : parameter.Type;
        return parameter.Type switch
        {
            "bool" => OptionSpec.Flag(parameter.Name, help) with { Default = parameter.Default ?? "false" },
            "list" => OptionSpec.List(parameter.Name, "A,B,…", help) with { Default = parameter.Default, Required = parameter.Required },
            _ => OptionSpec.Value(parameter.Name, parameter.Type.ToUpperInvariant(), help, parameter.Default, parameter.Required),
        };
    }

    private static List<ComponentParameter> ReadParameters(object? node, FileChecker file)
    {
        if (node is null)
        {
            return [];
        }

        var entries = new List<(string At, Dictionary<string, object?> Map)>();
        if (node is List<object?> list)
        {
            entries.AddRange(list.Select((p, i) => ($"params[{i}]", file.Map(p, $"params[{i}]"))));
        }
        else if (node is Dictionary<string, object?> byName)
        {
            foreach (KeyValuePair<string, object?> pair in byName)
            {
                Dictionary<string, object?> map = pair.Value is null ? [] : file.Map(pair.Value, "params." + pair.Key);
                if (map.ContainsKey("name"))
                {
                    throw file.Error($"params.{pair.Key}: the name is the key; drop 'name'");
                }
                entries.Add(($"params.{pair.Key}", new Dictionary<string, object?>(map) { ["name"] = pair.Key }));
            }
        }
        else
        {
            throw file.Error("params is a list of parameters (or a mapping of names to parameters)");
        }

        var result = new List<ComponentParameter>();
        foreach ((string at, Dictionary<string, object?> map) in entries)
        {
            file.Keys(map, s_paramKeys, at);
            string name = file.Scalar(map.GetValueOrDefault("name"), at + ".name") ?? throw file.Error($"{at} has no name");
            if (!ParameterName().IsMatch(name) || s_builtInPlaceholders.Contains(name, StringComparer.Ordinal))
            {
                throw file.Error($"{at}: '{name}' is not a parameter name (letters, digits, '_' and '-', starting with a letter; not kiln or cwd)");
            }
            if (result.Exists(p => p.Name.Replace('_', '-') == name.Replace('_', '-')))
            {
                throw file.Error($"{at}: parameter '{name}' is declared twice");
            }
            string type = file.Scalar(map.GetValueOrDefault("type"), at + ".type") ?? "string";
            if (!s_types.Contains(type, StringComparer.Ordinal))
            {
                throw file.Error($"{at}: parameter '{name}' has type '{type}'; types are {string.Join(", ", s_types)}");
            }
            bool required = file.Bool(map.GetValueOrDefault("required"), at + ".required") ?? false;
            bool remainder = file.Bool(map.GetValueOrDefault("remainder"), at + ".remainder") ?? false;
            string help = file.Scalar(map.GetValueOrDefault("help"), at + ".help") ?? "";
            string? defaultValue = map.GetValueOrDefault("default") switch
            {
                null => null,
                List<object?> values when type == "list" => string.Join(',', values.Select((v, i) => file.Scalar(v, $"{at}.default[{i}]") ?? "")),
                object value => file.Scalar(value, at + ".default"),
            };
            if (defaultValue is not null && type != "list" && !HasType(defaultValue, type))
            {
                throw file.Error($"{at}: the default of parameter '{name}', '{defaultValue}', is not {Article(type)} {type}");
            }
            if (remainder && (type != "list" || defaultValue is not null || required))
            {
                throw file.Error($"{at}: a remainder parameter ('{name}') has type list, no default and is not required");
            }
            if (remainder && result.Exists(p => p.Remainder))
            {
                throw file.Error($"{at}: only one parameter can be the remainder");
            }
            result.Add(new ComponentParameter(name, type, defaultValue, required, help, remainder));
        }
        return result;
    }

    private static void CheckPlaceholders(object? node, HashSet<string> known, FileChecker file, string at)
    {
        switch (node)
        {
            case string text:
                foreach (Match match in Placeholder().Matches(text))
                {
                    if (!known.Contains(match.Groups[1].Value))
                    {
                        throw file.Error($"{at}: '{{{{{match.Groups[1].Value}}}}}' is not a declared parameter (declared: {string.Join(", ", known.Order(StringComparer.Ordinal))})");
                    }
                }
                break;
            case List<object?> list:
                for (int i = 0; i < list.Count; i++)
                {
                    CheckPlaceholders(list[i], known, file, $"{at}[{i}]");
                }
                break;
            case Dictionary<string, object?> map:
                foreach (KeyValuePair<string, object?> pair in map)
                {
                    if (at.Length > 0 || pair.Key != "params")
                    {
                        CheckPlaceholders(pair.Value, known, file, at.Length == 0 ? pair.Key : at + "." + pair.Key);
                    }
                }
                break;
            default:
                break;
        }
    }

    /// <summary>Converts the template into an app, substituting every string with <paramref name="substitute"/>
    /// (true as its second argument where a list element may become several). Without a context only the shape is
    /// checked: numbers, retry policies and named resources are read once values are substituted.</summary>
    private AppDef ToApp(Func<string, bool, IReadOnlyList<string>> substitute, FileChecker file, ComponentContext? context)
    {
        bool checkNumbers = context is not null;
        string One(object? node, string at) => string.Concat(substitute(file.Scalar(node, at) ?? "", false));
        string? Optional(object? node, string at) => node is null ? null : One(node, at);
        int? Number(object? node, string at, int minimum)
        {
            string? text = Optional(node, at);
            if (text is null || !checkNumbers)
            {
                return text is null ? null : minimum;
            }
            return int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= minimum
                ? value
                : throw file.Error($"{at} is a whole number of at least {minimum}, not '{text}'");
        }
        IReadOnlyList<string> Strings(object? node, string at) =>
            node is null ? [] : [.. file.List(node, at).SelectMany((item, i) => substitute(file.Scalar(item, $"{at}[{i}]") ?? "", true))];
        Dictionary<string, string> StringMap(object? node, string at) =>
            node is null ? [] : file.Map(node, at).ToDictionary(p => p.Key, p => One(p.Value, at + "." + p.Key), StringComparer.Ordinal);

        string fileStem = Path.GetFileNameWithoutExtension(_path);
        string appName = Optional(_document.GetValueOrDefault("name"), "name") ?? fileStem;
        var roles = new List<Role>();
        List<object?> roleNodes = file.List(_document["roles"], "roles");
        if (roleNodes.Count == 0)
        {
            throw file.Error("roles is empty; give at least one role");
        }
        for (int i = 0; i < roleNodes.Count; i++)
        {
            string at = $"roles[{i}]";
            Dictionary<string, object?> role = file.Map(roleNodes[i], at);
            file.Keys(role, s_roleKeys, at);
            string name = Optional(role.GetValueOrDefault("name"), at + ".name") ?? throw file.Error($"{at} has no name");
            string entrypoint = Optional(role.GetValueOrDefault("entrypoint"), at + ".entrypoint") ?? throw file.Error($"{at} ({name}) has no entrypoint");
            roles.Add(new Role
            {
                Name = name,
                Entrypoint = entrypoint,
                Image = Optional(role.GetValueOrDefault("image"), at + ".image") ?? "",
                Args = Strings(role.GetValueOrDefault("args"), at + ".args"),
                Env = StringMap(role.GetValueOrDefault("env"), at + ".env"),
                NumReplicas = Number(role.GetValueOrDefault("num_replicas"), at + ".num_replicas", 1) ?? 1,
                MinReplicas = Number(role.GetValueOrDefault("min_replicas"), at + ".min_replicas", 1),
                MaxRetries = Number(role.GetValueOrDefault("max_retries"), at + ".max_retries", 0) ?? 0,
                RetryPolicy = Policy(Optional(role.GetValueOrDefault("retry_policy"), at + ".retry_policy"), at + ".retry_policy", file, checkNumbers),
                Resource = ReadResource(role.GetValueOrDefault("resource"), at + ".resource"),
                PortMap = file.Map(role.GetValueOrDefault("port_map") ?? new Dictionary<string, object?>(), at + ".port_map")
                    .ToDictionary(p => p.Key, p => Number(p.Value, $"{at}.port_map.{p.Key}", 0) ?? 0, StringComparer.Ordinal),
                Mounts = ReadMounts(role.GetValueOrDefault("mounts"), at + ".mounts"),
            });
        }
        return new AppDef
        {
            Name = appName,
            Roles = roles,
            Metadata = StringMap(_document.GetValueOrDefault("metadata"), "metadata"),
        };

        Resource ReadResource(object? node, string at)
        {
            if (node is null)
            {
                return Resource.Default;
            }
            if (node is string)
            {
                string named = One(node, at);
                return context is null ? Resource.Default : NamedResources.Get(named, context, _syntax);
            }
            Dictionary<string, object?> map = file.Map(node, at);
            file.Keys(map, s_resourceKeys, at);
            return new Resource(
                Number(map.GetValueOrDefault("cpu"), at + ".cpu", 0) ?? Resource.Default.Cpu,
                Number(map.GetValueOrDefault("gpu"), at + ".gpu", 0) ?? Resource.Default.Gpu,
                Number(map.GetValueOrDefault("memMB"), at + ".memMB", 1) ?? Resource.Default.MemMB);
        }

        IReadOnlyList<Mount> ReadMounts(object? node, string at)
        {
            if (node is null)
            {
                return [];
            }
            var mounts = new List<Mount>();
            List<object?> items = file.List(node, at);
            for (int i = 0; i < items.Count; i++)
            {
                Dictionary<string, object?> map = file.Map(items[i], $"{at}[{i}]");
                file.Keys(map, s_mountKeys, $"{at}[{i}]");
                string source = Optional(map.GetValueOrDefault("src"), $"{at}[{i}].src") ?? throw file.Error($"{at}[{i}] has no src");
                string destination = Optional(map.GetValueOrDefault("dst"), $"{at}[{i}].dst") ?? throw file.Error($"{at}[{i}] has no dst");
                string? readOnly = Optional(map.GetValueOrDefault("readonly"), $"{at}[{i}].readonly");
                bool isReadOnly = false;
                if (readOnly is not null && checkNumbers && !bool.TryParse(readOnly, out isReadOnly))
                {
                    throw file.Error($"{at}[{i}].readonly is true or false, not '{readOnly}'");
                }
                mounts.Add(new Mount(source, destination, isReadOnly));
            }
            return mounts;
        }
    }

    private static RetryPolicy Policy(string? text, string at, FileChecker file, bool check)
    {
        if (text is null || !check)
        {
            return RetryPolicy.Application;
        }
        return text.Trim().ToUpperInvariant() switch
        {
            "APPLICATION" => RetryPolicy.Application,
            "REPLICA" => RetryPolicy.Replica,
            "ROLE" => RetryPolicy.Role,
            _ => throw file.Error($"{at} is application, replica or role, not '{text}'"),
        };
    }

    private static bool HasType(string value, string type) => type switch
    {
        "int" => long.TryParse(value.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out _),
        "float" => double.TryParse(value.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out _),
        "bool" => bool.TryParse(value.Trim(), out _),
        _ => true,
    };

    private static string Article(string type) => type is "int" ? "an" : "a";

    [GeneratedRegex(@"\{\{\s*([A-Za-z][A-Za-z0-9_-]*)\s*\}\}", RegexOptions.CultureInvariant)]
    private static partial Regex Placeholder();

    [GeneratedRegex(@"^[A-Za-z][A-Za-z0-9_-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex ParameterName();

    /// <summary>Shape checks with messages that name the file (and, while building, the component and its usage).</summary>
    private sealed class FileChecker(string path, string? component = null, ComponentSyntax? syntax = null)
    {
        public LaunchException Error(string problem)
        {
            string message = component is null
                ? $"component file {path}: {problem}"
                : $"component {component} ({path}): {problem}";
            return new LaunchException(syntax is null ? message : message + "\n" + syntax.Synopsis);
        }

        public Dictionary<string, object?> Map(object? node, string at) =>
            node as Dictionary<string, object?> ?? throw Error($"{at} is a mapping of keys to values");

        public List<object?> List(object? node, string at) =>
            node as List<object?> ?? throw Error($"{at} is a list");

        public string? Scalar(object? node, string at) => node switch
        {
            null => null,
            string text => text,
            _ => throw Error($"{at} is a single value, not a list or mapping"),
        };

        public bool? Bool(object? node, string at)
        {
            string? text = Scalar(node, at);
            if (text is null)
            {
                return null;
            }
            return bool.TryParse(text, out bool value) ? value : throw Error($"{at} is true or false, not '{text}'");
        }

        public void Keys(Dictionary<string, object?> map, string[] allowed, string at)
        {
            foreach (string key in map.Keys)
            {
                if (!allowed.Contains(key, StringComparer.Ordinal))
                {
                    throw Error($"{at} has an unknown key '{key}'; keys are {string.Join(", ", allowed)}");
                }
            }
        }
    }
}
