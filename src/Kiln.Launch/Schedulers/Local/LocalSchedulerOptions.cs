using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>How the local scheduler is set up.</summary>
internal sealed class LocalSchedulerOptions
{
    /// <summary>The folder of the app folders (<c>$KILN_STATE_DIR/local</c> or <c>~/.kiln/local</c>).</summary>
    public required string StateDirectory { get; init; }

    /// <summary>
    /// How to start Kiln for a detached supervisor (e.g. <c>["/opt/kiln/kiln"]</c>, or <c>["dotnet", "kiln.dll"]</c>):
    /// <c>local-supervise APP_DIR</c> is appended. Null: supervisors run inside this process (tests and embedders), and
    /// apps end with it.
    /// </summary>
    public IReadOnlyList<string>? SupervisorCommand { get; init; }

    /// <summary>The folder relative entrypoints and roles without an image run in. Default: the current folder.</summary>
    public string WorkingDirectory { get; init; } = Environment.CurrentDirectory;

    /// <summary>The session in handles (<c>local://SESSION/APP_ID</c>). Default: <c>kiln</c>.</summary>
    public string Session { get; init; } = "kiln";

    /// <summary>Reads the submitting environment (PATH for entrypoints); tests replace it.</summary>
    public Func<string, string?> GetEnvironmentVariable { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>The clock. Default: the system clock.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Where the scheduler and in-process supervisors log. Default: nowhere.</summary>
    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;
}
