namespace Kiln.Runtime;

/// <summary>A native part Kiln needs is missing or cannot be used; the message says which and what to do.</summary>
public sealed class KilnRuntimeException : Exception
{
    /// <summary>Creates the exception with a message for the person running Kiln.</summary>
    public KilnRuntimeException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the failure underneath.</summary>
    public KilnRuntimeException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception.</summary>
    public KilnRuntimeException()
    {
    }
}
