using System.Globalization;

namespace Kiln.Launch.Config;

/// <summary>
/// <c>.kilnconfig</c>: INI sections as <c>.torchxconfig</c> has them — <c>[SCHEDULER]</c> run options,
/// <c>[component:NAME]</c> component defaults, <c>[cli:run]</c> defaults of <c>kiln run</c> (e.g. <c>scheduler = local</c>).
/// Files are found with TorchX's precedence: <c>$KILNCONFIG</c> alone when set (it turns the hierarchy off), else
/// <c>~/.kilnconfig</c> over <c>./.kilnconfig</c>; values given on the command line win over all of them.
/// </summary>
/// <remarks>
/// Syntax (Python configparser's common subset): <c>[section]</c> headers; <c>key = value</c> or <c>key: value</c>;
/// whole-line comments starting with <c>#</c> or <c>;</c>; indented lines continue the previous value (joined with a
/// newline); keys are matched without regard to case, section names exactly (after trimming).
/// </remarks>
internal sealed class KilnConfig
{
    /// <summary>The environment variable naming the one config file to read.</summary>
    public const string EnvironmentVariable = "KILNCONFIG";

    /// <summary>The config file's name in the home and current folders.</summary>
    public const string FileName = ".kilnconfig";

    private readonly Dictionary<string, Dictionary<string, string>> _sections;

    private KilnConfig(Dictionary<string, Dictionary<string, string>> sections, IReadOnlyList<string> files)
    {
        _sections = sections;
        Files = files;
    }

    /// <summary>No sections at all.</summary>
    public static KilnConfig Empty { get; } = new(new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal), []);

    /// <summary>The files read, lowest precedence first.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>Every section, by name.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, string>> Sections =>
        _sections.ToDictionary(s => s.Key, s => (IReadOnlyDictionary<string, string>)s.Value, StringComparer.Ordinal);

    /// <summary>The keys of <paramref name="section"/> (empty when it is absent).</summary>
    public IReadOnlyDictionary<string, string> Section(string section) =>
        _sections.TryGetValue(section, out Dictionary<string, string>? keys) ? keys : new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);

    /// <summary>One value, or null.</summary>
    public string? Get(string section, string key) => _sections.TryGetValue(section, out Dictionary<string, string>? keys) && keys.TryGetValue(key, out string? value) ? value : null;

    /// <summary>Reads the config files with TorchX's precedence.</summary>
    /// <param name="workingDirectory">Where <c>./.kilnconfig</c> is looked for.</param>
    /// <param name="getEnvironmentVariable">Reads <c>KILNCONFIG</c> and <c>HOME</c>.</param>
    /// <exception cref="LaunchException">A file that <c>$KILNCONFIG</c> names is missing, or a file is malformed.</exception>
    public static KilnConfig Load(string workingDirectory, Func<string, string?> getEnvironmentVariable)
    {
        ArgumentNullException.ThrowIfNull(getEnvironmentVariable);
        List<string> files = [];
        if (getEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } only)
        {
            string path = Path.GetFullPath(only, workingDirectory);
            if (!File.Exists(path))
            {
                throw new LaunchException($"${EnvironmentVariable} names {path}, which does not exist.");
            }
            files.Add(path);
        }
        else
        {
            string project = Path.GetFullPath(FileName, workingDirectory);
            string? home = getEnvironmentVariable("HOME");
            string? user = string.IsNullOrEmpty(home) ? null : Path.Combine(home, FileName);
            if (File.Exists(project))
            {
                files.Add(project);
            }
            if (user is not null && File.Exists(user) && user != project)
            {
                files.Add(user);
            }
        }
        var sections = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        foreach (string file in files)
        {
            string text;
            try
            {
                text = File.ReadAllText(file);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new LaunchException($"{file}: cannot read: {ex.Message}", ex);
            }
            Merge(sections, ParseSections(text, file));
        }
        return new KilnConfig(sections, files);
    }

    /// <summary>Parses one file's text.</summary>
    /// <exception cref="LaunchException">A malformed line; the message names the source and line.</exception>
    public static KilnConfig Parse(string text, string source = "<text>") => new(ParseSections(text, source), [source]);

    private static void Merge(Dictionary<string, Dictionary<string, string>> into, Dictionary<string, Dictionary<string, string>> from)
    {
        foreach ((string name, Dictionary<string, string> keys) in from)
        {
            if (!into.TryGetValue(name, out Dictionary<string, string>? target))
            {
                into[name] = target = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            }
            foreach ((string key, string value) in keys)
            {
                target[key] = value;
            }
        }
    }

    private static Dictionary<string, Dictionary<string, string>> ParseSections(string text, string source)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sections = new Dictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        Dictionary<string, string>? current = null;
        string? lastKey = null;
        string[] lines = text.Split('\n');
        for (int number = 1; number <= lines.Length; number++)
        {
            string raw = lines[number - 1].TrimEnd('\r');
            string line = raw.Trim();
            if (line.Length == 0)
            {
                lastKey = null;
                continue;
            }
            if (line[0] is '#' or ';')
            {
                continue;
            }
            string where = string.Create(CultureInfo.InvariantCulture, $"{source}:{number}");
            if (char.IsWhiteSpace(raw[0]) && current is not null && lastKey is not null)
            {
                current[lastKey] = current[lastKey].Length == 0 ? line : current[lastKey] + "\n" + line;
                continue;
            }
            if (line[0] == '[')
            {
                if (line[^1] != ']' || line.Length < 3)
                {
                    throw new LaunchException($"{where}: \"{line}\" is not a section header like [local].");
                }
                string name = line[1..^1].Trim();
                if (!sections.TryGetValue(name, out current))
                {
                    sections[name] = current = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                }
                lastKey = null;
                continue;
            }
            int separator = line.IndexOfAny(['=', ':']);
            if (separator <= 0)
            {
                throw new LaunchException($"{where}: \"{line}\" is neither a [section] nor key = value.");
            }
            if (current is null)
            {
                throw new LaunchException($"{where}: \"{line}\" comes before any [section].");
            }
            lastKey = line[..separator].Trim();
            current[lastKey] = line[(separator + 1)..].Trim();
        }
        return sections;
    }
}
