namespace Kiln.Serve.Security;

/// <summary>
/// Downloads an allowed http(s) <c>.mar</c> URL into the model store (temp file, then rename), refusing redirects (they
/// could leave <c>allowed_urls</c>) and archives over the size limit (413).
/// </summary>
internal static class ArchiveDownloader
{
    private static readonly HttpClient s_client = new(new SocketsHttpHandler { AllowAutoRedirect = false }) { Timeout = TimeSpan.FromMinutes(10) };

    public static bool IsHttp(string url) =>
        url.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("https://", StringComparison.OrdinalIgnoreCase);

    /// <summary>Downloads <paramref name="url"/> into <paramref name="store"/> and returns the archive's file name there.</summary>
    /// <exception cref="ServeException">400 bad URL or failed download, 409 the file exists, 413 over <paramref name="maxBytes"/>.</exception>
    public static async Task<string> DownloadAsync(string url, string store, long maxBytes, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? uri))
        {
            throw new ServeException(400, "DownloadArchiveException", $"Model url {url} is not a valid URL.");
        }
        string name = Path.GetFileName(Uri.UnescapeDataString(uri.AbsolutePath));
        if (!name.EndsWith(".mar", StringComparison.Ordinal) || name.Length <= 4 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
        {
            throw new ServeException(400, "DownloadArchiveException", $"Model url {url} must end in a .mar file name of letters, digits, '.', '-' and '_'.");
        }
        string target = Path.Combine(store, name);
        if (File.Exists(target))
        {
            throw new ServeException(409, "FileAlreadyExistsException", $"Model file {name} already exists in the model store; register it by name or remove it first.");
        }
        using HttpResponseMessage response = await s_client.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new ServeException(400, "DownloadArchiveException", $"Failed to download archive from: {url} (HTTP {(int)response.StatusCode}).");
        }
        if (response.Content.Headers.ContentLength > maxBytes)
        {
            throw TooLarge(url, maxBytes);
        }
        string temp = Path.Combine(store, "." + name + "." + Guid.NewGuid().ToString("N") + ".download");
        try
        {
            Stream body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (body.ConfigureAwait(false))
            {
                var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write);
                await using (file.ConfigureAwait(false))
                {
                    byte[] chunk = new byte[81920];
                    long total = 0;
                    while (true)
                    {
                        int read = await body.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
                        if (read == 0)
                        {
                            break;
                        }
                        total += read;
                        if (total > maxBytes)
                        {
                            throw TooLarge(url, maxBytes);
                        }
                        await file.WriteAsync(chunk.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                    }
                }
            }
            File.Move(temp, target, overwrite: false);
            return name;
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private static ServeException TooLarge(string url, long maxBytes) =>
        new(413, "RequestEntityTooLargeException", $"The archive at {url} exceeds the maximum archive size ({maxBytes} bytes).");
}
