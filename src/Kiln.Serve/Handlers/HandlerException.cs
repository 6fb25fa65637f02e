namespace Kiln.Serve.Handlers;

/// <summary>
/// A failure a custom handler reports on purpose, with the HTTP status code its caller gets (e.g. 400 for input the
/// handler cannot read). Thrown from a per-request step of <see cref="InferenceHandler{TInput, TOutput}"/>, or passed to
/// <see cref="InferenceRequest.Fail"/> or <see cref="InferenceResponse.Failure(HandlerException)"/>, it fails only that
/// request; thrown from a batch step of <see cref="IInferenceHandler"/> it fails the whole batch with its status code.
/// </summary>
/// <remarks>
/// The caller gets <c>{"code","type","message"}</c> with this status code, this message, and type
/// <c>BadRequestException</c> for a 4xx code or <c>InternalServerException</c> for a 5xx code. Any other exception a
/// handler throws fails its whole batch with 503 <c>InternalServerException</c> "Prediction failed" (as TorchServe
/// answers a handler that raised), and is logged.
/// </remarks>
public sealed class HandlerException : Exception
{
    /// <summary>Creates a 400 failure with a generic message.</summary>
    public HandlerException()
        : this(400, "The handler could not process the request.")
    {
    }

    /// <summary>Creates a 400 failure with <paramref name="message"/>.</summary>
    public HandlerException(string message)
        : this(400, message)
    {
    }

    /// <summary>Creates a 400 failure with <paramref name="message"/> and the failure underneath.</summary>
    public HandlerException(string message, Exception innerException)
        : this(400, message, innerException)
    {
    }

    /// <summary>Creates a failure with an HTTP status code (400–599) and a message for the caller.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="statusCode"/> is not between 400 and 599.</exception>
    public HandlerException(int statusCode, string message)
        : base(message)
    {
        StatusCode = Check(statusCode);
    }

    /// <summary>Creates a failure with an HTTP status code (400–599), a message for the caller and the failure underneath.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="statusCode"/> is not between 400 and 599.</exception>
    public HandlerException(int statusCode, string message, Exception innerException)
        : base(message, innerException)
    {
        StatusCode = Check(statusCode);
    }

    /// <summary>The HTTP status code the caller gets, 400–599.</summary>
    /// <value>400 unless a constructor with a status code was used.</value>
    public int StatusCode { get; }

    internal ServeException ToServeException() =>
        new(StatusCode, StatusCode < 500 ? "BadRequestException" : "InternalServerException", Message, this);

    private static int Check(int statusCode)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(statusCode, 400);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(statusCode, 599);
        return statusCode;
    }
}
