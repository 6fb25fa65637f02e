namespace Kiln.Launch;

/// <summary>Bad input to the launcher (an unknown component or scheduler, a malformed option) or a scheduler that cannot run; the message names the problem.</summary>
public sealed class LaunchException : Exception
{
    /// <summary>Creates the exception.</summary>
    public LaunchException()
    {
    }

    /// <summary>Creates the exception with a message that names the problem.</summary>
    public LaunchException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public LaunchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
