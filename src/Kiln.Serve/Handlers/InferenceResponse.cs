using System.Text;

namespace Kiln.Serve.Handlers;

/// <summary>The answer to one request: a body with its content type (HTTP 200), or a failure with its status code.</summary>
/// <remarks>Immutable; the server sends <see cref="Body"/> as it is, so do not change the memory behind it afterwards.</remarks>
public sealed class InferenceResponse
{
    private const string JsonContentType = "application/json";

    /// <summary>Creates a successful response.</summary>
    /// <param name="body">The response body.</param>
    /// <param name="contentType">Its media type. Default: <c>application/json</c>.</param>
    /// <exception cref="ArgumentException"><paramref name="contentType"/> is empty.</exception>
    public InferenceResponse(ReadOnlyMemory<byte> body, string contentType = JsonContentType)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(contentType);
        Body = body;
        ContentType = contentType;
    }

    private InferenceResponse(HandlerException error)
    {
        ContentType = JsonContentType;
        Error = error;
    }

    /// <summary>The response body; empty for a failure.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>The body's media type, e.g. <c>application/json</c> or <c>text/plain; charset=utf-8</c>.</summary>
    public string ContentType { get; }

    /// <summary>The failure this response stands for, or null for a successful one.</summary>
    public HandlerException? Error { get; }

    /// <summary>Whether this response is a failure (<see cref="Error"/> is set).</summary>
    public bool IsFailure => Error is not null;

    /// <summary>A successful response with UTF-8 text, <c>text/plain; charset=utf-8</c>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public static InferenceResponse Text(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return new InferenceResponse(Encoding.UTF8.GetBytes(text), "text/plain; charset=utf-8");
    }

    /// <summary>A response that fails its request only, with the error's status code and message.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="error"/> is null.</exception>
    public static InferenceResponse Failure(HandlerException error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new InferenceResponse(error);
    }

    /// <summary>A response that fails its request only, with a status code (400–599) and a message.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="statusCode"/> is not between 400 and 599.</exception>
    public static InferenceResponse Failure(int statusCode, string message) => new(new HandlerException(statusCode, message));
}
