namespace Kiln.Optimize;

/// <summary>A model could not be read, written or optimized; the message names the file, node or pass.</summary>
public sealed class OptimizeException : Exception
{
    /// <summary>Creates an exception with no message.</summary>
    public OptimizeException()
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    /// <param name="message">What went wrong.</param>
    public OptimizeException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and its cause.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public OptimizeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
