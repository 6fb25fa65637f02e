using System.Text;
using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>
/// The text of a <c>text_embedder</c> / <c>text_classifier</c> request. A body whose Content-Type is JSON
/// (<c>application/json</c> or <c>…+json</c>) is either a JSON string (<c>"some text"</c>) or an object with a string
/// <c>text</c> property (<c>{"text": "some text"}</c>); any other body is the text itself in UTF-8, as TorchServe's text
/// handlers take it (a leading byte order mark is dropped).
/// </summary>
internal static class TextRequest
{
    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads the text of one request.</summary>
    /// <exception cref="ServeException">400 <c>BadRequestException</c>: not UTF-8, JSON of another shape, or no text (empty or only white space).</exception>
    public static string Read(ReadOnlyMemory<byte> body, string? contentType)
    {
        string text = IsJson(contentType) ? ReadJson(body) : ReadPlain(body.Span);
        if (string.IsNullOrWhiteSpace(text))
        {
            throw ServeException.BadRequest("The request has no text to run; send the text as the body (UTF-8), a JSON string, or {\"text\": \"…\"} with Content-Type: application/json.");
        }
        return text;
    }

    private static bool IsJson(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType))
        {
            return false;
        }
        int semicolon = contentType.IndexOf(';', StringComparison.Ordinal);
        string media = (semicolon >= 0 ? contentType[..semicolon] : contentType).Trim();
        return media.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || media.EndsWith("+json", StringComparison.OrdinalIgnoreCase);
    }

    private static string ReadPlain(ReadOnlySpan<byte> body)
    {
        if (body.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]))
        {
            body = body[3..];
        }
        try
        {
            return s_strictUtf8.GetString(body);
        }
        catch (DecoderFallbackException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The body is not UTF-8 text (invalid byte at offset {ex.Index}); text handlers take UTF-8.", ex);
        }
    }

    private static string ReadJson(ReadOnlyMemory<byte> body)
    {
        try
        {
            using JsonDocument document = JsonDocument.Parse(body);
            JsonElement root = document.RootElement;
            if (root.ValueKind == JsonValueKind.String)
            {
                return root.GetString()!;
            }
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("text", out JsonElement text) && text.ValueKind == JsonValueKind.String)
            {
                return text.GetString()!;
            }
            throw ServeException.BadRequest("A JSON body must be a string (\"…\") or an object with a string \"text\" property ({\"text\": \"…\"}).");
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The body is declared JSON but does not parse: {ex.Message}", ex);
        }
    }
}
