using System.Text.RegularExpressions;

namespace Kiln.Serve.Security;

/// <summary>
/// TorchServe's <c>allowed_urls</c>: a model URL with a scheme (http, https, file, …) must match one of the configured
/// regular expressions in full. Kiln's default is stricter than TorchServe's (which allows any URL): with no patterns
/// configured only archive file names in the model store are accepted.
/// </summary>
internal sealed class UrlPolicy
{
    private static readonly TimeSpan s_matchTimeout = TimeSpan.FromSeconds(1);
    private readonly Regex[] _allowed;

    public UrlPolicy(ServeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ModelStore = options.ModelStore;
        MaxArchiveSize = options.MaxArchiveSize;
        _allowed = [.. options.AllowedUrls.Where(p => p.Length > 0).Select(p => new Regex("^(?:" + p + ")$", RegexOptions.CultureInvariant, s_matchTimeout))];
    }

    /// <summary>Where allowed http(s) archives are downloaded to.</summary>
    public string ModelStore { get; }

    /// <summary>The largest archive a download may be (413 beyond).</summary>
    public long MaxArchiveSize { get; }

    /// <summary>Throws 400 unless <paramref name="url"/> is a plain file name (checked against the store later) or matches an allowed pattern.</summary>
    /// <exception cref="ServeException">The URL is not allowed.</exception>
    public void Check(string url)
    {
        ArgumentNullException.ThrowIfNull(url);
        if (!url.Contains("://", StringComparison.Ordinal))
        {
            return;
        }
        bool allowed;
        try
        {
            allowed = _allowed.Any(r => r.IsMatch(url));
        }
        catch (RegexMatchTimeoutException)
        {
            allowed = false;
        }
        if (!allowed)
        {
            throw new ServeException(400, "DownloadArchiveException", _allowed.Length == 0
                ? $"Given URL {url} does not match any allowed URL(s): no allowed_urls are configured, so only .mar file names in the model store are accepted."
                : $"Given URL {url} does not match any allowed URL(s); add a pattern for it to allowed_urls in the server configuration.");
        }
    }
}
