using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Hosting;

/// <summary>Reading bodies with a size limit, parsing query values and writing TorchServe's JSON bodies.</summary>
internal static class HttpIo
{
    /// <summary>Runs an endpoint, turning a <see cref="ServeException"/> into its <c>{"code","type","message"}</c> body.</summary>
    public static async Task GuardAsync(HttpContext context, ILogger logger, Func<HttpContext, Task> endpoint)
    {
        try
        {
            await endpoint(context).ConfigureAwait(false);
        }
        catch (ServeException ex)
        {
            if (logger.IsEnabled(LogLevel.Debug))
            {
                ServeLog.RequestFailed(logger, context.Request.Method, context.Request.Path.Value ?? "", ex.StatusCode, ex.ErrorType, ex.Message);
            }
            await WriteErrorAsync(context, ex).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nothing to answer.
        }
    }

    public static Task WriteErrorAsync(HttpContext context, ServeException error)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }
        return WriteJsonAsync(context, error.StatusCode, writer =>
        {
            writer.WriteNumber("code", error.StatusCode);
            writer.WriteString("type", error.ErrorType);
            writer.WriteString("message", error.Message);
        });
    }

    public static Task WriteStatusAsync(HttpContext context, int statusCode, string status) =>
        WriteJsonAsync(context, statusCode, writer => writer.WriteString("status", status));

    /// <summary>Writes a JSON object whose members <paramref name="members"/> writes.</summary>
    public static Task WriteJsonAsync(HttpContext context, int statusCode, Action<Utf8JsonWriter> members) =>
        WriteRawJsonAsync(context, statusCode, Json(writer =>
        {
            writer.WriteStartObject();
            members(writer);
            writer.WriteEndObject();
        }));

    public static byte[] Json(Action<Utf8JsonWriter> write)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            write(writer);
        }
        return buffer.ToArray();
    }

    public static async Task WriteRawJsonAsync(HttpContext context, int statusCode, byte[] json, string? contentType = null)
    {
        context.Response.StatusCode = statusCode;
        context.Response.ContentType = contentType ?? "application/json";
        context.Response.ContentLength = json.Length;
        await context.Response.Body.WriteAsync(json, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Reads the body (raw, or the <c>data</c> part of a multipart form), refusing more than <paramref name="maxBytes"/> with 413.</summary>
    public static async Task<byte[]> ReadBodyAsync(HttpRequest request, long maxBytes, CancellationToken cancellationToken)
    {
        if (request.ContentLength > maxBytes)
        {
            throw TooLarge(maxBytes);
        }
        if (request.HasFormContentType)
        {
            return await ReadFormBodyAsync(request, maxBytes, cancellationToken).ConfigureAwait(false);
        }
        var buffer = new MemoryStream(request.ContentLength is { } length ? (int)length : 4096);
        byte[] chunk = new byte[81920];
        while (true)
        {
            int read = await request.Body.ReadAsync(chunk, cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                break;
            }
            if (buffer.Length + read > maxBytes)
            {
                throw TooLarge(maxBytes);
            }
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    private static async Task<byte[]> ReadFormBodyAsync(HttpRequest request, long maxBytes, CancellationToken cancellationToken)
    {
        IFormCollection form = await request.ReadFormAsync(cancellationToken).ConfigureAwait(false);
        IFormFile? file = form.Files.GetFile("data") ?? form.Files.GetFile("body") ?? (form.Files.Count > 0 ? form.Files[0] : null);
        if (file is not null)
        {
            if (file.Length > maxBytes)
            {
                throw TooLarge(maxBytes);
            }
            var buffer = new MemoryStream((int)file.Length);
            await file.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
            return buffer.ToArray();
        }
        string? text = form.TryGetValue("data", out var data) ? data.ToString() : form.TryGetValue("body", out var body) ? body.ToString() : null;
        return text is null
            ? throw ServeException.BadRequest("The multipart form has no \"data\" part; send -F data=@file.")
            : System.Text.Encoding.UTF8.GetBytes(text);
    }

    private static ServeException TooLarge(long maxBytes) =>
        new(413, "RequestEntityTooLargeException", $"The request body exceeds max_request_size ({maxBytes} bytes); raise max_request_size in the server configuration to accept it.");

    public static int? QueryInt(HttpRequest request, string name)
    {
        string? text = request.Query[name];
        if (string.IsNullOrEmpty(text))
        {
            return null;
        }
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value)
            ? value
            : throw ServeException.BadRequest($"Parameter {name} must be an integer, not \"{text}\".");
    }

    public static bool QueryBool(HttpRequest request, string name)
    {
        string? text = request.Query[name];
        if (string.IsNullOrEmpty(text))
        {
            return false;
        }
        return bool.TryParse(text, out bool value) ? value : throw ServeException.BadRequest($"Parameter {name} must be true or false, not \"{text}\".");
    }

    public static string? RouteString(HttpContext context, string key) => context.Request.RouteValues[key] as string;
}
