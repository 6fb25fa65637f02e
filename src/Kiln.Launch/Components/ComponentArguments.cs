using System.Globalization;
using System.Text;

namespace Kiln.Launch.Components;

/// <summary>How an option takes its value.</summary>
internal enum OptionKind
{
    /// <summary><c>--name VALUE</c> or <c>--name=VALUE</c>.</summary>
    Value,

    /// <summary><c>--name</c> (true) or <c>--name=true|false</c>.</summary>
    Flag,

    /// <summary><c>--name A,B</c>, repeatable; the values add up.</summary>
    List,
}

/// <summary>One option of a component.</summary>
/// <param name="Name">The name without dashes: one letter is written <c>-x</c>, longer names <c>--name</c>.</param>
/// <param name="Kind">How it takes its value.</param>
/// <param name="Metavar">The value's placeholder in the usage, e.g. <c>N</c>.</param>
/// <param name="Help">One line of help.</param>
internal sealed record OptionSpec(string Name, OptionKind Kind, string Metavar, string Help)
{
    /// <summary>The value when neither the command line nor <c>.kilnconfig</c> gives one; null: none.</summary>
    public string? Default { get; init; }

    /// <summary>The option must be given (on the command line or in <c>.kilnconfig</c>).</summary>
    public bool Required { get; init; }

    /// <summary>How the option is written: <c>-j</c> or <c>--name</c>.</summary>
    public string Display => Name.Length == 1 ? "-" + Name : "--" + Name;

    /// <summary>Creates a value option.</summary>
    public static OptionSpec Value(string name, string metavar, string help, string? defaultValue = null, bool required = false) =>
        new(name, OptionKind.Value, metavar, help) { Default = defaultValue, Required = required };

    /// <summary>Creates a flag.</summary>
    public static OptionSpec Flag(string name, string help) => new(name, OptionKind.Flag, "", help);

    /// <summary>Creates a list option.</summary>
    public static OptionSpec List(string name, string metavar, string help) => new(name, OptionKind.List, metavar, help);
}

/// <summary>A component's command line: its options and what the arguments after them mean.</summary>
/// <param name="Component">The component's name, for messages.</param>
/// <param name="Options">The options, in the order the usage lists them.</param>
/// <param name="Rest">The placeholder for the arguments after <c>--</c> (or after the first argument that is not an
/// option), e.g. <c>ARGS…</c>; null: the component takes none.</param>
internal sealed record ComponentSyntax(string Component, IReadOnlyList<OptionSpec> Options, string? Rest)
{
    /// <summary>The synopsis: <c>usage: kiln run NAME [-x VALUE] … [-- ARGS…]</c>.</summary>
    public string Synopsis
    {
        get
        {
            var text = new StringBuilder();
            text.Append("usage: kiln run ").Append(Component);
            foreach (OptionSpec option in Options)
            {
                string shown = option.Kind == OptionKind.Flag ? option.Display : option.Display + " " + option.Metavar;
                text.Append(' ').Append(option.Required ? shown : "[" + shown + "]");
            }
            if (Rest is not null)
            {
                text.Append(" [-- ").Append(Rest).Append(']');
            }
            return text.ToString();
        }
    }

    /// <summary>The usage: the synopsis, then one line per option with its default.</summary>
    public string Usage
    {
        get
        {
            var text = new StringBuilder(Synopsis);
            int width = Options.Count == 0 ? 0 : Options.Max(o => OptionColumn(o).Length);
            foreach (OptionSpec option in Options)
            {
                text.Append('\n').Append("  ").Append(OptionColumn(option).PadRight(width)).Append("  ").Append(option.Help);
                if (option.Default is not null)
                {
                    text.Append(" (default: ").Append(option.Default.Length == 0 ? "\"\"" : option.Default).Append(')');
                }
                else if (option.Required)
                {
                    text.Append(" (required)");
                }
            }
            return text.ToString();
        }
    }

    /// <summary>The options as written, e.g. <c>-j, --script, --debug</c>.</summary>
    public string OptionList => string.Join(", ", Options.Select(o => o.Display));

    private static string OptionColumn(OptionSpec option) =>
        option.Kind == OptionKind.Flag ? option.Display : option.Display + " " + option.Metavar;

    /// <summary>A <see cref="LaunchException"/> that names the component and the problem (first line) and shows the synopsis (second line).</summary>
    public LaunchException Error(string problem) => new($"component {Component}: {problem}\n{Synopsis}");

    /// <summary>Parses <paramref name="args"/>, with the <c>[component:NAME]</c> keys of <paramref name="context"/> as defaults.</summary>
    /// <exception cref="LaunchException">An unknown option or configuration key, a missing value, an unexpected argument or a missing required option.</exception>
    public ComponentArguments Parse(IReadOnlyList<string> args, ComponentContext? context)
    {
        ArgumentNullException.ThrowIfNull(args);
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var lists = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        var fromCommandLine = new HashSet<string>(StringComparer.Ordinal);
        var given = new HashSet<string>(StringComparer.Ordinal);
        var rest = new List<string>();
        int i = 0;
        while (i < args.Count)
        {
            string token = args[i];
            if (token == "--")
            {
                if (Rest is null && i + 1 < args.Count)
                {
                    throw Error($"unexpected argument '{args[i + 1]}' after -- (this component takes only options: {OptionList})");
                }
                rest.AddRange(args.Skip(i + 1));
                break;
            }
            if (token.Length < 2 || token[0] != '-' || IsNegativeNumber(token))
            {
                if (Rest is null)
                {
                    throw Error($"unexpected argument '{token}' (this component takes only options: {OptionList})");
                }
                rest.AddRange(args.Skip(i));
                break;
            }
            int equals = token.IndexOf('=', StringComparison.Ordinal);
            string written = equals < 0 ? token : token[..equals];
            OptionSpec option = Find(written)
                ?? throw Error($"unknown option '{written}'{Suggestions.DidYouMean(written, Options.Select(o => o.Display))}; options: {OptionList}");
            if (option.Kind != OptionKind.List && !fromCommandLine.Add(option.Name))
            {
                throw Error($"option {option.Display} is given twice");
            }
            string value;
            if (equals >= 0)
            {
                value = token[(equals + 1)..];
                i++;
            }
            else if (option.Kind == OptionKind.Flag)
            {
                value = "true";
                i++;
            }
            else
            {
                if (i + 1 >= args.Count || args[i + 1] == "--" || Find(args[i + 1]) is not null)
                {
                    throw Error($"option {option.Display} needs a value ({option.Metavar})");
                }
                value = args[i + 1];
                i += 2;
            }
            Store(option, value, values, lists, $"option {option.Display}");
            fromCommandLine.Add(option.Name);
            given.Add(option.Name);
        }

        IReadOnlyDictionary<string, string>? config = context?.Section("component:" + Component);
        if (config is not null)
        {
            foreach (KeyValuePair<string, string> pair in config)
            {
                OptionSpec option = Find(pair.Key.Trim(), configKey: true)
                    ?? throw Error($".kilnconfig [component:{Component}] has an unknown key '{pair.Key}'; keys are the options without dashes: {string.Join(", ", Options.Select(o => o.Name))}");
                if (!fromCommandLine.Contains(option.Name))
                {
                    Store(option, pair.Value.Trim(), values, lists, $".kilnconfig [component:{Component}] key {option.Name}");
                    given.Add(option.Name);
                }
            }
        }

        foreach (OptionSpec option in Options)
        {
            if (option.Kind == OptionKind.List ? lists.ContainsKey(option.Name) : values.ContainsKey(option.Name))
            {
                continue;
            }
            if (option.Required)
            {
                throw Error($"option {option.Display} is required ({option.Metavar})");
            }
            if (option.Default is not null)
            {
                Store(option, option.Default, values, lists, $"the default of {option.Display}");
            }
        }
        return new ComponentArguments(this, values, lists, given, rest);
    }

    private void Store(OptionSpec option, string value, Dictionary<string, string> values, Dictionary<string, List<string>> lists, string source)
    {
        switch (option.Kind)
        {
            case OptionKind.Flag:
                values[option.Name] = bool.TryParse(value, out bool flag)
                    ? (flag ? "true" : "false")
                    : throw Error($"{source} is true or false, not '{value}'");
                break;
            case OptionKind.List:
                if (!lists.TryGetValue(option.Name, out List<string>? list))
                {
                    list = [];
                    lists[option.Name] = list;
                }
                list.AddRange(value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
                break;
            default:
                values[option.Name] = value;
                break;
        }
    }

    private OptionSpec? Find(string written, bool configKey = false)
    {
        string name;
        if (configKey)
        {
            name = written.TrimStart('-');
        }
        else if (written.StartsWith("--", StringComparison.Ordinal))
        {
            name = written[2..];
        }
        else if (written.Length == 2 && written[0] == '-')
        {
            name = written[1..];
        }
        else
        {
            return null;
        }
        name = name.Replace('_', '-');
        StringComparison comparison = configKey ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return Options.FirstOrDefault(o => string.Equals(o.Name.Replace('_', '-'), name, comparison));
    }

    private static bool IsNegativeNumber(string token) =>
        token.Length > 1 && token[0] == '-' && double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
}

/// <summary>Parsed component arguments: option values (command line over <c>.kilnconfig</c> over defaults) and the rest.</summary>
internal sealed class ComponentArguments
{
    private readonly ComponentSyntax _syntax;
    private readonly Dictionary<string, string> _values;
    private readonly Dictionary<string, List<string>> _lists;
    private readonly HashSet<string> _given;

    internal ComponentArguments(
        ComponentSyntax syntax,
        Dictionary<string, string> values,
        Dictionary<string, List<string>> lists,
        HashSet<string> given,
        IReadOnlyList<string> rest)
    {
        _syntax = syntax;
        _values = values;
        _lists = lists;
        _given = given;
        Rest = rest;
    }

    /// <summary>The arguments after <c>--</c> or after the first argument that is not an option.</summary>
    public IReadOnlyList<string> Rest { get; }

    /// <summary>True when the option has a value from the command line or <c>.kilnconfig</c> (not only its default).</summary>
    public bool IsGiven(string name) => _given.Contains(name);

    /// <summary>The option's value, or null.</summary>
    public string? Value(string name) => _values.GetValueOrDefault(name);

    /// <summary>The flag's value.</summary>
    public bool Flag(string name) => _values.TryGetValue(name, out string? value) && value == "true";

    /// <summary>The list's values, in order.</summary>
    public IReadOnlyList<string> List(string name) => _lists.TryGetValue(name, out List<string>? list) ? list : [];

    /// <summary>The option's value as an integer of at least <paramref name="minimum"/>, or null when it has none.</summary>
    /// <exception cref="LaunchException">The value is not such an integer.</exception>
    public int? Int(string name, int minimum)
    {
        string? text = Value(name);
        if (text is null)
        {
            return null;
        }
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) || value < minimum)
        {
            string display = name.Length == 1 ? "-" + name : "--" + name;
            throw _syntax.Error($"option {display} takes an integer of at least {minimum}, not '{text}'");
        }
        return value;
    }

    /// <summary>The list's <c>K=V</c> entries as a map; an entry without <c>=</c> continues the previous value after a comma.</summary>
    /// <exception cref="LaunchException">The first entry has no <c>=</c> or a key is empty.</exception>
    public Dictionary<string, string> KeyValues(string name)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        string? last = null;
        foreach (string entry in List(name))
        {
            int equals = entry.IndexOf('=', StringComparison.Ordinal);
            if (equals < 0)
            {
                if (last is null)
                {
                    throw _syntax.Error($"option --{name} takes KEY=VALUE pairs separated by commas, not '{entry}'");
                }
                result[last] += "," + entry;
                continue;
            }
            string key = entry[..equals].Trim();
            if (key.Length == 0)
            {
                throw _syntax.Error($"option --{name} has an entry without a key: '{entry}'");
            }
            result[key] = entry[(equals + 1)..];
            last = key;
        }
        return result;
    }
}
