namespace Kiln.Data;

/// <summary>A pipeline cannot go on: bad input (naming the file, offset or URL), or a state that does not fit.</summary>
public sealed class DataPipelineException : Exception
{
    /// <summary>Creates the exception.</summary>
    public DataPipelineException()
    {
    }

    /// <summary>Creates the exception with a message naming what failed.</summary>
    public DataPipelineException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and the failure underneath.</summary>
    public DataPipelineException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
