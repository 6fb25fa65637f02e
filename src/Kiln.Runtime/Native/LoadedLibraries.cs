namespace Kiln.Runtime.Native;

/// <summary>Which shared libraries this process has mapped (Linux: /proc/self/maps).</summary>
internal static class LoadedLibraries
{
    /// <summary>The full path of a mapped library whose file name starts with <paramref name="fileName"/>, or null.</summary>
    public static string? FindPath(string fileName)
    {
        const string Maps = "/proc/self/maps";
        if (!File.Exists(Maps))
        {
            return null;
        }
        foreach (string line in File.ReadLines(Maps))
        {
            int slash = line.IndexOf('/', StringComparison.Ordinal);
            if (slash < 0)
            {
                continue;
            }
            string path = line[slash..];
            if (Path.GetFileName(path).StartsWith(fileName, StringComparison.Ordinal))
            {
                return path;
            }
        }
        return null;
    }
}
