using System.Security.Cryptography;
using System.Text;
using Kiln.Serve.Hosting;
using Microsoft.AspNetCore.Http;

namespace Kiln.Serve.Security;

/// <summary>
/// TorchServe 0.11.1's token authorization: a management key and an inference key, written to a key file (mode
/// 0600) at start; each request sends <c>Authorization: Bearer &lt;key&gt;</c>. Missing → 401, wrong → 403.
/// </summary>
internal sealed class TokenAuthorization
{
    private const string Scheme = "Bearer ";

    private TokenAuthorization(string managementKey, string inferenceKey, string keyFile)
    {
        ManagementKey = managementKey;
        InferenceKey = inferenceKey;
        KeyFile = keyFile;
    }

    public string ManagementKey { get; }

    public string InferenceKey { get; }

    public string KeyFile { get; }

    /// <summary>Creates fresh keys and writes them to the key file (replacing an older one) readable only by its owner.</summary>
    public static TokenAuthorization Create(ServeOptions options)
    {
        string keyFile = Path.GetFullPath(string.IsNullOrEmpty(options.KeyFile) ? "key_file.json" : options.KeyFile);
        var auth = new TokenAuthorization(NewKey(), NewKey(), keyFile);
        byte[] json = HttpIo.Json(writer =>
        {
            writer.WriteStartObject();
            writer.WriteStartObject("management");
            writer.WriteString("key", auth.ManagementKey);
            writer.WriteEndObject();
            writer.WriteStartObject("inference");
            writer.WriteString("key", auth.InferenceKey);
            writer.WriteEndObject();
            writer.WriteEndObject();
        });
        string? folder = Path.GetDirectoryName(keyFile);
        if (!string.IsNullOrEmpty(folder))
        {
            Directory.CreateDirectory(folder);
        }
        string temp = keyFile + "." + Guid.NewGuid().ToString("N") + ".tmp";
        var fileOptions = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            fileOptions.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }
        using (var stream = new FileStream(temp, fileOptions))
        {
            stream.Write(json);
        }
        File.Move(temp, keyFile, overwrite: true);
        return auth;
    }

    /// <summary>Deletes the key file, as TorchServe does on shutdown.</summary>
    public void DeleteKeyFile()
    {
        try
        {
            File.Delete(KeyFile);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Middleware that lets a request through only with <paramref name="key"/>; paths in <paramref name="open"/> need none.</summary>
    public static Func<RequestDelegate, RequestDelegate> Require(string key, string api, params string[] open)
    {
        byte[] expected = Encoding.UTF8.GetBytes(key);
        return next => context =>
        {
            string path = context.Request.Path.Value ?? "";
            if (open.Contains(path, StringComparer.Ordinal))
            {
                return next(context);
            }
            string? header = context.Request.Headers.Authorization;
            if (string.IsNullOrEmpty(header) || !header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
                return HttpIo.WriteErrorAsync(context, new ServeException(401, "InvalidKeyException",
                    $"Token Authorization failed: send \"Authorization: Bearer <{api} key>\" with the {api} key from the key file, or start the server with token authorization disabled."));
            }
            byte[] sent = Encoding.UTF8.GetBytes(header[Scheme.Length..].Trim());
            if (!CryptographicOperations.FixedTimeEquals(sent, expected))
            {
                return HttpIo.WriteErrorAsync(context, new ServeException(403, "InvalidKeyException",
                    $"Token Authorization failed: the token is not the {api} key; read the \"{api}\" key from the key file."));
            }
            return next(context);
        };
    }

    private static string NewKey() => Base64UrlEncode(RandomNumberGenerator.GetBytes(24));

    private static string Base64UrlEncode(byte[] bytes) =>
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
