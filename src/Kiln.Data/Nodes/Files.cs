using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Kiln.Data.Nodes;

/// <summary>
/// Lists files under a folder whose paths (relative, with '/') match any of the glob patterns: '*' within a
/// folder, '**' across folders, '?' one character. Sorted ordinally, so every rank lists the same order.
/// </summary>
internal sealed class FileListerNode : Node<string>
{
    private readonly string _root;
    private readonly Regex[] _patterns;
    private readonly bool _recursive;
    private string[] _files = [];
    private int _position;

    public FileListerNode(string id, string root, string[] patterns, bool recursive, JsonObject? parameters)
        : base(id, "files", [], parameters)
    {
        _root = root;
        _recursive = recursive || patterns.Any(p => p.Contains('/', StringComparison.Ordinal));
        _patterns = [.. (patterns.Length == 0 ? ["*"] : patterns).Select(GlobToRegex)];
    }

    internal static Regex GlobToRegex(string glob)
    {
        var regex = new StringBuilder("^");
        for (int i = 0; i < glob.Length; i++)
        {
            char c = glob[i];
            if (c == '*' && i + 1 < glob.Length && glob[i + 1] == '*')
            {
                bool slash = i + 2 < glob.Length && glob[i + 2] == '/';
                regex.Append(slash ? "(?:.*/)?" : ".*");
                i += slash ? 2 : 1;
            }
            else
            {
                regex.Append(c switch
                {
                    '*' => "[^/]*",
                    '?' => "[^/]",
                    _ => Regex.Escape(c.ToString()),
                });
            }
        }
        return new Regex(regex.Append('$').ToString(), RegexOptions.CultureInvariant);
    }

    protected override bool Produce(out string item)
    {
        if (_position >= _files.Length)
        {
            item = "";
            return false;
        }
        item = _files[_position++];
        return true;
    }

    protected override void ResetCore(JsonObject? state)
    {
        if (!Directory.Exists(_root))
        {
            throw new DataPipelineException($"node '{Id}' (files): folder {_root} does not exist");
        }
        _files = [.. Directory.EnumerateFiles(_root, "*", _recursive ? SearchOption.AllDirectories : SearchOption.TopDirectoryOnly)
            .Where(f => _patterns.Any(p => p.IsMatch(Path.GetRelativePath(_root, f).Replace('\\', '/'))))
            .Order(StringComparer.Ordinal)];
        _position = state?["position"]?.GetValue<int>() ?? 0;
        if (state?["count"]?.GetValue<int>() is int count && count != _files.Length)
        {
            throw new DataPipelineException($"node '{Id}' (files): {_root} held {count} matching files at the checkpoint and holds {_files.Length} now");
        }
    }

    protected override JsonObject? SaveCore() => new() { ["position"] = _position, ["count"] = _files.Length };
}
