using System.Globalization;
using System.IO.Compression;
using System.Text.Json;

namespace Kiln.Serve.Archives;

/// <summary>An extracted <c>.mar</c>: its manifest, the folder it was extracted to and its model-config.yaml keys.</summary>
internal sealed class ModelArchive
{
    internal const string ManifestPath = "MAR-INF/MANIFEST.json";
    private const int SymbolicLinkMode = 0xA000;
    private const int FileTypeMask = 0xF000;

    private ModelArchive(ModelManifest manifest, string folder, IReadOnlyDictionary<string, string> config)
    {
        Manifest = manifest;
        Folder = folder;
        Config = config;
    }

    public ModelManifest Manifest { get; }

    /// <summary>The folder holding the extracted files; the caller deletes it when the model goes away.</summary>
    public string Folder { get; }

    /// <summary>Top-level scalar keys of model-config.yaml (minWorkers, batchSize, …); empty when the archive has none.</summary>
    public IReadOnlyDictionary<string, string> Config { get; }

    public string PathOf(string fileInArchive) => Path.Combine(Folder, fileInArchive);

    /// <summary>
    /// Extracts <paramref name="marPath"/> into a new folder under <paramref name="extractRoot"/>, refusing entries that
    /// would land outside it (<c>..</c>, absolute paths) and symbolic links.
    /// </summary>
    /// <exception cref="ServeException">400 for a missing, unsafe or malformed archive (the message names it).</exception>
    public static ModelArchive Extract(string marPath, string extractRoot, long maxExtractedBytes)
    {
        string name = Path.GetFileName(marPath);
        if (!File.Exists(marPath))
        {
            throw new ServeException(400, "DownloadArchiveException", $"Model archive {name} is not in the model store ({Path.GetDirectoryName(marPath)}).");
        }
        string folder = Path.Combine(Path.GetFullPath(extractRoot), Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        try
        {
            ZipArchive zip;
            try
            {
                zip = ZipFile.OpenRead(marPath);
            }
            catch (InvalidDataException ex)
            {
                throw new ServeException(400, "ModelException", $"Model archive {name} is not a zip file: {ex.Message}", ex);
            }
            using (zip)
            {
                ExtractEntries(zip, name, folder, maxExtractedBytes);
            }
            ModelManifest manifest = ReadManifest(Path.Combine(folder, ManifestPath), name);
            if (!File.Exists(Path.Combine(folder, manifest.SerializedFile)))
            {
                throw new ServeException(400, "ModelException", $"Model archive {name} names serializedFile \"{manifest.SerializedFile}\", which it does not contain.");
            }
            IReadOnlyDictionary<string, string> config = manifest.ConfigFile is { } configFile && File.Exists(Path.Combine(folder, configFile))
                ? ReadTopLevelYaml(File.ReadAllLines(Path.Combine(folder, configFile)))
                : new Dictionary<string, string>();
            return new ModelArchive(manifest, folder, config);
        }
        catch
        {
            TryDelete(folder);
            throw;
        }
    }

    public static void TryDelete(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static void ExtractEntries(ZipArchive zip, string name, string folder, long maxExtractedBytes)
    {
        string root = folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar;
        long total = 0;
        foreach (ZipArchiveEntry entry in zip.Entries)
        {
            string entryName = entry.FullName.Replace('\\', '/');
            if (entryName.StartsWith('/') || Path.IsPathRooted(entryName) || entryName.Contains(':', StringComparison.Ordinal)
                || entryName.Split('/').Any(part => part == ".."))
            {
                throw new ServeException(400, "ModelException", $"Model archive {name} has entry \"{entry.FullName}\" that points outside the archive; refusing to extract it.");
            }
            if (((entry.ExternalAttributes >> 16) & FileTypeMask) == SymbolicLinkMode)
            {
                throw new ServeException(400, "ModelException", $"Model archive {name} has entry \"{entry.FullName}\" that is a symbolic link; archives may hold only files and folders.");
            }
            string target = Path.GetFullPath(Path.Combine(folder, entryName));
            if (!target.StartsWith(root, StringComparison.Ordinal))
            {
                throw new ServeException(400, "ModelException", $"Model archive {name} has entry \"{entry.FullName}\" that points outside the archive; refusing to extract it.");
            }
            if (entryName.EndsWith('/'))
            {
                Directory.CreateDirectory(target);
                continue;
            }
            total += entry.Length;
            if (total > maxExtractedBytes)
            {
                throw new ServeException(413, "ModelException", $"Model archive {name} expands to more than {maxExtractedBytes} bytes (the archive size limit).");
            }
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            entry.ExtractToFile(target, overwrite: false);
        }
    }

    private static ModelManifest ReadManifest(string path, string name)
    {
        if (!File.Exists(path))
        {
            throw new ServeException(400, "ModelException", $"Model archive {name} has no {ManifestPath}; build it with torch-model-archiver or kiln archive.");
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
            JsonElement root = document.RootElement;
            if (!root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
            {
                throw new ServeException(400, "ModelException", $"{ManifestPath} in {name} has no \"model\" object.");
            }
            string Required(string key) => model.TryGetProperty(key, out JsonElement value) && value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } text
                ? text
                : throw new ServeException(400, "ModelException", $"{ManifestPath} in {name} lacks model.{key}.");
            string? Optional(JsonElement element, string key) => element.TryGetProperty(key, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
            return new ModelManifest(Required("modelName"), Optional(model, "modelVersion") ?? "1.0", Required("serializedFile"), Required("handler"))
            {
                Runtime = Optional(root, "runtime") ?? "python",
                ConfigFile = Optional(model, "configFile"),
                Description = Optional(model, "description") ?? Optional(root, "description"),
                CreatedOn = Optional(root, "createdOn"),
                ArchiverVersion = Optional(root, "archiverVersion"),
            };
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "ModelException", $"{ManifestPath} in {name} is not valid JSON: {ex.Message}", ex);
        }
    }

    /// <summary>Reads the top-level <c>key: value</c> scalars of a YAML file; nested blocks and lists are skipped.</summary>
    internal static Dictionary<string, string> ReadTopLevelYaml(IEnumerable<string> lines)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string raw in lines)
        {
            if (raw.Length == 0 || char.IsWhiteSpace(raw[0]) || raw[0] == '#' || raw[0] == '-')
            {
                continue;
            }
            int hash = raw.IndexOf(" #", StringComparison.Ordinal);
            string line = hash >= 0 ? raw[..hash] : raw;
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }
            string value = line[(colon + 1)..].Trim().Trim('"', '\'');
            if (value.Length > 0)
            {
                result[line[..colon].Trim()] = value;
            }
        }
        return result;
    }

    internal static string? ConfigString(IReadOnlyDictionary<string, string> config, string key) =>
        config.TryGetValue(key, out string? text) && text.Trim().Trim('"', '\'') is { Length: > 0 } value ? value : null;

    internal static int? ConfigInt(IReadOnlyDictionary<string, string> config, string key) =>
        config.TryGetValue(key, out string? text) && int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;
}
