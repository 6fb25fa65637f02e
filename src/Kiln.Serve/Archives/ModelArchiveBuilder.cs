using System.Globalization;
using System.IO.Compression;
using System.Text.Json;

namespace Kiln.Serve.Archives;

/// <summary>Writes a <c>.mar</c> (a zip with <c>MAR-INF/MANIFEST.json</c>) that TorchServe's archive reader and Kiln both read.</summary>
public sealed class ModelArchiveBuilder
{
    private readonly ModelManifest _manifest;
    private readonly List<(string Source, string EntryName)> _files = [];

    /// <summary>Starts an archive for <paramref name="manifest"/>; add the serialized file with <see cref="AddFile"/>.</summary>
    /// <exception cref="ArgumentException">The model name breaks TorchServe's naming rule.</exception>
    public ModelArchiveBuilder(ModelManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        if (!ModelManifest.IsValidName(manifest.ModelName))
        {
            throw new ArgumentException($"Model name \"{manifest.ModelName}\" must start with a letter and hold only letters, digits, '_', '-' and '.'.", nameof(manifest));
        }
        _manifest = manifest;
    }

    /// <summary>Adds a file at the archive's top level (or under <paramref name="entryName"/>).</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    public ModelArchiveBuilder AddFile(string path, string? entryName = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"File {path} for the model archive does not exist.", path);
        }
        _files.Add((path, entryName ?? Path.GetFileName(path)));
        return this;
    }

    /// <summary>Writes the archive to <paramref name="marPath"/>.</summary>
    /// <exception cref="IOException">The file exists and <paramref name="force"/> is false.</exception>
    public async Task WriteAsync(string marPath, bool force = false, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(marPath);
        if (!_files.Any(f => f.EntryName == _manifest.SerializedFile))
        {
            throw new InvalidOperationException($"The archive lacks its serialized file \"{_manifest.SerializedFile}\"; add it with AddFile.");
        }
        if (File.Exists(marPath) && !force)
        {
            throw new IOException($"{marPath} already exists; pass --force to overwrite it.");
        }
        string temporary = marPath + ".tmp";
        FileStream stream = new(temporary, FileMode.Create, FileAccess.Write, FileShare.None);
        await using (stream.ConfigureAwait(false))
        {
            ZipArchive zip = new(stream, ZipArchiveMode.Create, leaveOpen: true);
            await using (zip.ConfigureAwait(false))
            {
                ZipArchiveEntry manifestEntry = zip.CreateEntry(ModelArchive.ManifestPath);
                Stream manifestStream = await manifestEntry.OpenAsync(cancellationToken).ConfigureAwait(false);
                await using (manifestStream.ConfigureAwait(false))
                {
                    await manifestStream.WriteAsync(ManifestJson(), cancellationToken).ConfigureAwait(false);
                }
                foreach ((string source, string entryName) in _files)
                {
                    ZipArchiveEntry entry = zip.CreateEntry(entryName, CompressionLevel.Fastest);
                    Stream target = await entry.OpenAsync(cancellationToken).ConfigureAwait(false);
                    await using (target.ConfigureAwait(false))
                    {
                        FileStream input = File.OpenRead(source);
                        await using (input.ConfigureAwait(false))
                        {
                            await input.CopyToAsync(target, cancellationToken).ConfigureAwait(false);
                        }
                    }
                }
            }
        }
        File.Move(temporary, marPath, overwrite: true);
    }

    private byte[] ManifestJson()
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteString("createdOn", _manifest.CreatedOn ?? DateTime.UtcNow.ToString("dd/MM/yyyy HH:mm:ss", CultureInfo.InvariantCulture));
            writer.WriteString("runtime", _manifest.Runtime);
            writer.WriteStartObject("model");
            writer.WriteString("modelName", _manifest.ModelName);
            writer.WriteString("serializedFile", _manifest.SerializedFile);
            writer.WriteString("handler", _manifest.Handler);
            writer.WriteString("modelVersion", _manifest.ModelVersion);
            if (_manifest.ConfigFile is not null)
            {
                writer.WriteString("configFile", _manifest.ConfigFile);
            }
            if (_manifest.Description is not null)
            {
                writer.WriteString("description", _manifest.Description);
            }
            writer.WriteEndObject();
            writer.WriteString("archiverVersion", _manifest.ArchiverVersion ?? "kiln-0.1.0");
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
