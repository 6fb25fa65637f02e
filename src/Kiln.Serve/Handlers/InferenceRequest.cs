namespace Kiln.Serve.Handlers;

/// <summary>One request of a batch as a custom handler sees it: its body, its content type and its place in the batch.</summary>
/// <remarks>
/// A request belongs to one batch, which one worker thread runs through the handler's steps; it is not meant to be
/// shared between threads. The body is valid only during the batch: copy what must outlive it.
/// </remarks>
public sealed class InferenceRequest
{
    internal InferenceRequest(int index, ReadOnlyMemory<byte> body, string? contentType)
    {
        Index = index;
        Body = body;
        ContentType = contentType;
    }

    /// <summary>The request's position in its batch, 0-based.</summary>
    public int Index { get; }

    /// <summary>The request body: the raw HTTP body, or the <c>data</c> part of a multipart form.</summary>
    public ReadOnlyMemory<byte> Body { get; }

    /// <summary>The request's <c>Content-Type</c> header, or null when it sent none.</summary>
    public string? ContentType { get; }

    /// <summary>The failure recorded with <see cref="Fail"/>, or null.</summary>
    public HandlerException? Error { get; private set; }

    /// <summary>Whether <see cref="Fail"/> was called: the request is answered with <see cref="Error"/>.</summary>
    public bool IsFailed => Error is not null;

    /// <summary>
    /// Fails this request only: it is answered with the error's status code and message, whatever the handler's later
    /// steps produce for it, while the rest of the batch goes on. Typically called from
    /// <see cref="IInferenceHandler.Preprocess"/> for input the handler cannot read (leave the request out of the model's input).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="error"/> is null.</exception>
    public void Fail(HandlerException error)
    {
        ArgumentNullException.ThrowIfNull(error);
        Error ??= error;
    }
}
