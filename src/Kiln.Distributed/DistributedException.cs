namespace Kiln.Distributed;

/// <summary>A process group could not be created or a collective failed.</summary>
public sealed class DistributedException : Exception
{
    /// <summary>Creates an exception with no message.</summary>
    public DistributedException()
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    /// <param name="message">What went wrong.</param>
    public DistributedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a message and its cause.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The cause.</param>
    public DistributedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
