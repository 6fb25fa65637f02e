using Kiln.Serve.Archives;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Serve.Inference;

/// <summary>What a handler gets when its model version is registered: the extracted archive, the settings and how to open models.</summary>
internal sealed class HandlerContext(ModelArchive archive, ModelSettings settings, BackendOptions backend)
{
    public ModelArchive Archive => archive;

    public ModelSettings Settings => settings;

    public BackendOptions Backend => backend;

    /// <summary>The server's logger, for handlers that log (custom C# handlers get it in their context).</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>The full path of the archive's serialized file (the manifest's <c>serializedFile</c>).</summary>
    public string SerializedFile => archive.PathOf(archive.Manifest.SerializedFile);

    /// <summary>Opens the serialized file (ONNX or TorchScript).</summary>
    public ModelBackend OpenModel() => backend.Open(SerializedFile);

    /// <summary>The full path of an extra file of the archive, or null when the archive has none by that name.</summary>
    public string? ExtraFile(string name)
    {
        string path = archive.PathOf(name);
        return File.Exists(path) ? path : null;
    }
}
