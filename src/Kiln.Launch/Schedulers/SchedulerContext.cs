using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Kiln.Launch.Schedulers;

/// <summary>What a scheduler factory of <see cref="SchedulerCatalog"/> gets from the host (the <c>kiln</c> CLI, or a test).</summary>
internal sealed record SchedulerContext
{
    /// <summary>Kiln's state folder: <c>$KILN_STATE_DIR</c>, else <c>~/.kiln</c>. A scheduler keeps its files in
    /// <c>StateDirectory/NAME</c> (the local scheduler: <c>StateDirectory/local/APP_ID</c>).</summary>
    public required string StateDirectory { get; init; }

    /// <summary>How to start Kiln itself (<c>["/path/kiln"]</c> or <c>["dotnet", "/path/kiln.dll"]</c>); null where no
    /// Kiln executable is at hand (the local scheduler then supervises inside this process).</summary>
    public IReadOnlyList<string>? KilnCommand { get; init; }

    /// <summary>The folder <c>kiln</c> runs in.</summary>
    public string WorkingDirectory { get; init; } = Environment.CurrentDirectory;

    /// <summary>Reads the environment; tests replace it.</summary>
    public Func<string, string?> GetEnvironmentVariable { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>The clock.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Where schedulers log.</summary>
    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;
}
