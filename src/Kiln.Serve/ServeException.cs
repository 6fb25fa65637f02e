namespace Kiln.Serve;

/// <summary>
/// A failure with TorchServe's HTTP status and error type (<c>{"code","type","message"}</c>); the message says
/// what failed and what to do.
/// </summary>
public sealed class ServeException : Exception
{
    /// <summary>Creates the exception with its HTTP status code, TorchServe's error type name and a message.</summary>
    public ServeException(int statusCode, string errorType, string message)
        : base(message)
    {
        StatusCode = statusCode;
        ErrorType = errorType;
    }

    /// <summary>Creates the exception with the failure underneath.</summary>
    public ServeException(int statusCode, string errorType, string message, Exception innerException)
        : base(message, innerException)
    {
        StatusCode = statusCode;
        ErrorType = errorType;
    }

    /// <summary>Creates a 500 InternalServerException.</summary>
    public ServeException()
        : this(500, "InternalServerException", "Internal server error.")
    {
    }

    /// <summary>Creates a 500 InternalServerException with a message.</summary>
    public ServeException(string message)
        : this(500, "InternalServerException", message)
    {
    }

    /// <summary>Creates a 500 InternalServerException with a message and the failure underneath.</summary>
    public ServeException(string message, Exception innerException)
        : this(500, "InternalServerException", message, innerException)
    {
    }

    /// <summary>The HTTP status code, e.g. 404.</summary>
    public int StatusCode { get; }

    /// <summary>TorchServe's error type name, e.g. <c>ModelNotFoundException</c>.</summary>
    public string ErrorType { get; }

    internal static ServeException BadRequest(string message) => new(400, "BadRequestException", message);

    internal static ServeException ModelNotFound(string model) => new(404, "ModelNotFoundException", $"Model not found: {model}");

    internal static ServeException VersionNotFound(string model, string version) =>
        new(404, "ModelVersionNotFoundException", $"Model version: {version} does not exist for model: {model}");

    internal static ServeException Unavailable(string message) => new(503, "ServiceUnavailableException", message);
}
