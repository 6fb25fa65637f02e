namespace Kiln.Serve.Archives;

/// <summary>The model section of a <c>.mar</c>'s <c>MAR-INF/MANIFEST.json</c> (torch-model-archiver's field names).</summary>
/// <param name="ModelName">Starts with a letter; letters, digits, <c>_</c>, <c>-</c> and <c>.</c>.</param>
/// <param name="ModelVersion">e.g. "1.0".</param>
/// <param name="SerializedFile">The model file inside the archive, e.g. "model.onnx".</param>
/// <param name="Handler">A built-in handler name: <c>tensor</c> or <c>image_embedder</c>.</param>
public sealed record ModelManifest(string ModelName, string ModelVersion, string SerializedFile, string Handler)
{
    /// <summary>The archive's <c>runtime</c>; torch-model-archiver writes "python". Default: "python".</summary>
    public string Runtime { get; init; } = "python";

    /// <summary>Optional model-config.yaml inside the archive.</summary>
    public string? ConfigFile { get; init; }

    /// <summary>Optional free text.</summary>
    public string? Description { get; init; }

    /// <summary>When the archive was written, as torch-model-archiver writes it ("dd/MM/yyyy HH:mm:ss").</summary>
    public string? CreatedOn { get; init; }

    /// <summary>The archiver's version string.</summary>
    public string? ArchiverVersion { get; init; }

    /// <summary>Whether <paramref name="name"/> is a valid model name (TorchServe's rule).</summary>
    public static bool IsValidName(string? name)
    {
        if (string.IsNullOrEmpty(name) || !char.IsAsciiLetter(name[0]))
        {
            return false;
        }
        foreach (char c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c != '_' && c != '-' && c != '.')
            {
                return false;
            }
        }
        return true;
    }
}
