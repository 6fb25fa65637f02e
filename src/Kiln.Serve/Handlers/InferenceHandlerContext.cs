using Kiln.Runtime;
using Kiln.Serve.Archives;
using Kiln.Serve.Inference;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Serve.Handlers;

/// <summary>
/// What a custom handler gets in <see cref="IInferenceHandler.Initialize"/>: the extracted archive, its manifest and
/// model-config.yaml values, the model version's batch size, a logger, and a way to open the archive's ONNX model with
/// the server's session settings.
/// </summary>
/// <remarks>Valid for the model version's lifetime; the handler may keep it. Thread-safe.</remarks>
public sealed class InferenceHandlerContext
{
    private readonly HandlerContext _context;
    private int _gpuSessions;

    internal InferenceHandlerContext(HandlerContext context, ILogger logger)
    {
        _context = context;
        Logger = logger;
    }

    /// <summary>The archive's manifest: model name, version, serialized file and handler as packaged.</summary>
    public ModelManifest Manifest => _context.Archive.Manifest;

    /// <summary>The folder the archive was extracted to (the serialized file, extra files and the handler assembly).</summary>
    /// <remarks>The server deletes it when the model version is unregistered; write nothing there that must last.</remarks>
    public string ModelFolder => _context.Archive.Folder;

    /// <summary>The full path of the serialized file (the manifest's <c>serializedFile</c>).</summary>
    public string SerializedFilePath => _context.SerializedFile;

    /// <summary>The top-level scalar keys of the archive's model-config.yaml (e.g. <c>batchSize</c> or the handler's own keys); empty when it has none.</summary>
    /// <remarks>Nested blocks are not read: put the handler's settings at the top level.</remarks>
    public IReadOnlyDictionary<string, string> Config => _context.Archive.Config;

    /// <summary>The most requests one batch holds (<c>batch_size</c>); a batch may hold fewer.</summary>
    public int MaxBatchSize => _context.Settings.BatchSize;

    /// <summary>The server's logger, for the handler's own events.</summary>
    public ILogger Logger { get; }

    /// <summary>Whether a session opened through this context runs on a GPU (reported as the model's device type).</summary>
    internal bool UsesGpu => Volatile.Read(ref _gpuSessions) > 0;

    /// <summary>The full path of a file at the top of the extracted archive (e.g. an extra file such as a vocabulary).</summary>
    /// <exception cref="ArgumentException"><paramref name="fileName"/> names a folder, a path or <c>..</c>.</exception>
    /// <exception cref="FileNotFoundException">The archive has no such file.</exception>
    public string GetFilePath(string fileName)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(fileName);
        if (!CustomHandlerLoader.IsPlainFileName(fileName))
        {
            throw new ArgumentException($"\"{fileName}\" must be a file name at the top of the archive, without folders or '..'.", nameof(fileName));
        }
        string path = Path.Combine(ModelFolder, fileName);
        return File.Exists(path) ? path : throw new FileNotFoundException($"Model archive of {Manifest.ModelName} has no file {fileName}.", path);
    }

    /// <summary>
    /// Opens an ONNX Runtime session on the serialized file, with the server's settings: its intra-op thread count, and
    /// the CUDA provider when this build has it and model-config.yaml does not say <c>deviceType: cpu</c>; a tuning file
    /// beside the model (<c>MODEL.onnx.tuning.json</c>, from <c>kiln optimize --autotune</c>) replaces them with its own.
    /// </summary>
    /// <remarks>The caller owns the session and must dispose it (in the handler's <c>Dispose</c>). <c>Run</c> is thread-safe.</remarks>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="KilnRuntimeException">ONNX Runtime rejects the model.</exception>
    /// <exception cref="ServeException">The tuning file beside the model is not valid.</exception>
    public InferenceSession OpenOnnxSession() => Open(SerializedFilePath);

    /// <summary>Opens an ONNX Runtime session on another ONNX file of the archive, with the server's settings.</summary>
    /// <remarks>The caller owns the session and must dispose it. <c>Run</c> is thread-safe.</remarks>
    /// <exception cref="ArgumentException"><paramref name="fileName"/> names a folder, a path or <c>..</c>.</exception>
    /// <exception cref="FileNotFoundException">The archive has no such file.</exception>
    /// <exception cref="KilnRuntimeException">ONNX Runtime rejects the model.</exception>
    public InferenceSession OpenOnnxSession(string fileName) => Open(GetFilePath(fileName));

    private InferenceSession Open(string path)
    {
        (OnnxSessionOptions settings, bool onGpu) = _context.Backend.OnnxSession(path);
        InferenceSession session = OnnxSessionFactory.Open(path, settings);
        if (onGpu)
        {
            Interlocked.Increment(ref _gpuSessions);
        }
        return session;
    }
}
