using System.Globalization;
using System.Text.RegularExpressions;
using Kiln.Launch;
using Kiln.Launch.Components;
using Kiln.Launch.Config;
using Kiln.Launch.Schedulers;
using Microsoft.Extensions.Logging;

namespace Kiln.Cli.Commands;

/// <summary>What the launch verbs share: the environment (state folder, config, how to start Kiln), handle parsing and exit codes.</summary>
internal static partial class LaunchSupport
{
    /// <summary>The app succeeded (or the verb did its job).</summary>
    public const int SucceededExitCode = 0;

    /// <summary>The app failed, or its state is unknown (<c>kiln run --wait</c>).</summary>
    public const int FailedExitCode = 1;

    /// <summary>Bad input: an unknown component, scheduler or app, a malformed option or handle, a scheduler that cannot run.</summary>
    public const int UsageExitCode = 2;

    /// <summary>The app was cancelled (<c>kiln run --wait</c>), as a shell reports a process ended by Ctrl+C.</summary>
    public const int CancelledExitCode = 130;

    /// <summary>How to start this Kiln again: the apphost beside the assembly, else <c>dotnet kiln.dll</c>; null when neither is found.</summary>
    public static IReadOnlyList<string>? KilnCommand()
    {
        if (Environment.GetEnvironmentVariable("KILN_EXECUTABLE") is { Length: > 0 } configured)
        {
            return [configured];
        }
        string apphost = Path.Combine(AppContext.BaseDirectory, "kiln");
        if (File.Exists(apphost) && (File.GetUnixFileMode(apphost) & UnixFileMode.UserExecute) != 0)
        {
            return [apphost];
        }
        string dll = Path.Combine(AppContext.BaseDirectory, "kiln.dll");
        if (File.Exists(dll))
        {
            string host = Environment.ProcessPath is { } path && Path.GetFileNameWithoutExtension(path) == "dotnet" ? path : "dotnet";
            return [host, dll];
        }
        return null;
    }

    /// <summary>The scheduler context of this process: <c>$KILN_STATE_DIR</c> or <c>~/.kiln</c>, the current folder, this Kiln.</summary>
    public static SchedulerContext SchedulerContext() => new()
    {
        StateDirectory = SchedulerCatalog.DefaultStateDirectory(Environment.GetEnvironmentVariable),
        KilnCommand = KilnCommand(),
        WorkingDirectory = Environment.CurrentDirectory,
    };

    /// <summary>The component context: the current folder, this Kiln's path, the config's sections.</summary>
    public static ComponentContext ComponentContext(KilnConfig config) =>
        new(Environment.CurrentDirectory, KilnCommand() is [var single] ? single : "kiln") { ConfigSections = config.Sections };

    /// <summary>The <c>.kilnconfig</c> files of this process (<c>$KILNCONFIG</c>, or <c>~/.kilnconfig</c> over <c>./.kilnconfig</c>).</summary>
    public static KilnConfig LoadConfig() => KilnConfig.Load(Environment.CurrentDirectory, Environment.GetEnvironmentVariable);

    /// <summary>The scheduler a handle names.</summary>
    /// <exception cref="LaunchException">Not a handle, or an unknown scheduler.</exception>
    public static (IScheduler Scheduler, Kiln.Launch.Specs.AppHandle Handle) Open(string text)
    {
        if (!Kiln.Launch.Specs.AppHandle.TryParse(text, out Kiln.Launch.Specs.AppHandle? handle))
        {
            throw new LaunchException($"\"{text}\" is not an app handle; expected SCHEDULER://SESSION/APP_ID, e.g. local://kiln/echo-3f2a9c.");
        }
        return (SchedulerCatalog.Create(handle.Scheduler, SchedulerContext()), handle);
    }

    /// <summary>Parses <c>SCHEDULER://SESSION/APP_ID[/ROLE[/REPLICA]]</c> (<c>kiln log</c>'s identifier).</summary>
    /// <exception cref="LaunchException">Malformed.</exception>
    public static (string Handle, string? Role, int? Replica) ParseLogIdentifier(string text)
    {
        Match match = LogIdentifier().Match(text);
        if (!match.Success)
        {
            throw new LaunchException($"\"{text}\" is not an app handle with an optional role and replica; expected SCHEDULER://SESSION/APP_ID[/ROLE[/REPLICA]], e.g. local://kiln/echo-3f2a9c/echo/0.");
        }
        string handle = $"{match.Groups["scheduler"].Value}://{match.Groups["session"].Value}/{match.Groups["app"].Value}";
        string? role = match.Groups["role"].Success ? match.Groups["role"].Value : null;
        int? replica = match.Groups["replica"].Success ? int.Parse(match.Groups["replica"].Value, CultureInfo.InvariantCulture) : null;
        return (handle, role, replica);
    }

    /// <summary>Parses <c>--since</c>/<c>--until</c>: an ISO 8601 time (UTC when it names no offset) or a duration before now (<c>90s</c>, <c>5m</c>, <c>2h</c>, <c>1d</c>, <c>250ms</c>).</summary>
    /// <exception cref="LaunchException">Neither.</exception>
    public static DateTimeOffset ParseTime(string option, string text, DateTimeOffset now)
    {
        Match relative = RelativeTime().Match(text.Trim());
        if (relative.Success)
        {
            double amount = double.Parse(relative.Groups["n"].Value, CultureInfo.InvariantCulture);
            TimeSpan span = relative.Groups["unit"].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(amount),
                "s" => TimeSpan.FromSeconds(amount),
                "m" => TimeSpan.FromMinutes(amount),
                "h" => TimeSpan.FromHours(amount),
                _ => TimeSpan.FromDays(amount),
            };
            return now - span;
        }
        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out DateTimeOffset time))
        {
            return time;
        }
        throw new LaunchException($"{option} {text} is neither a time (2026-11-26T10:00:00Z) nor a duration before now (90s, 5m, 2h, 1d).");
    }

    /// <summary>Parses <c>--scheduler-args k=v,k2=v2</c> (several may be given).</summary>
    /// <exception cref="LaunchException">A piece without <c>=</c> or a key.</exception>
    public static Dictionary<string, string> ParseSchedulerArgs(IEnumerable<string> values)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string value in values)
        {
            foreach (string piece in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                int equals = piece.IndexOf('=', StringComparison.Ordinal);
                if (equals <= 0)
                {
                    throw new LaunchException($"--scheduler-args: \"{piece}\" is not KEY=VALUE (e.g. --scheduler-args log_dir=/tmp/logs,cancel_grace=5).");
                }
                result[piece[..equals].Trim()] = piece[(equals + 1)..].Trim();
            }
        }
        return result;
    }

    [GeneratedRegex(@"^(?<scheduler>[A-Za-z0-9_.+-]+)://(?<session>[^/]*)/(?<app>[^/]+)(/(?<role>[^/]+)(/(?<replica>[0-9]+))?)?/?$")]
    private static partial Regex LogIdentifier();

    [GeneratedRegex(@"^(?<n>[0-9]+(\.[0-9]+)?)(?<unit>ms|s|m|h|d)$")]
    private static partial Regex RelativeTime();

    /// <summary>A logger that writes one timestamped line per message (the local supervisor's <c>supervisor.log</c> is its stderr).</summary>
    internal sealed class WriterLoggerFactory(TextWriter writer, LogLevel minimum) : ILoggerFactory
    {
        private readonly Lock _lock = new();

        public ILogger CreateLogger(string categoryName) => new WriterLogger(this, categoryName);

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        private sealed class WriterLogger(WriterLoggerFactory factory, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= factory.Minimum && logLevel != LogLevel.None;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (!IsEnabled(logLevel))
                {
                    return;
                }
                string line = string.Create(CultureInfo.InvariantCulture, $"{TimeProvider.System.GetUtcNow():O} {logLevel} {category}[{eventId.Id}] {formatter(state, exception)}");
                lock (factory._lock)
                {
                    factory.Writer.WriteLine(line);
                    if (exception is not null)
                    {
                        factory.Writer.WriteLine(exception.ToString());
                    }
                    factory.Writer.Flush();
                }
            }
        }

        private TextWriter Writer => writer;

        private LogLevel Minimum => minimum;
    }
}
