using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Threading.Channels;
using Kiln.Launch;
using Kiln.Launch.Components;
using Kiln.Launch.Config;
using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Local;
using Kiln.Launch.Specs;
using Microsoft.Extensions.Logging;

namespace Kiln.Cli.Commands;

/// <summary>
/// TorchX's verbs over Kiln.Launch: <c>run</c>, <c>status</c>, <c>log</c>, <c>cancel</c>, <c>list</c>, <c>describe</c>,
/// <c>builtins</c>, <c>runopts</c>, and the hidden <c>local-supervise</c> the local scheduler starts. Bad input (unknown
/// component, scheduler or app, malformed option or handle, a scheduler that cannot run) ends with one line on stderr
/// and exit code 2, with nothing submitted. See docs/launch.md.
/// </summary>
internal static class LaunchCommands
{
    private static readonly TimeSpan s_waitPoll = TimeSpan.FromMilliseconds(20);

    public static IEnumerable<Command> Create() => [Run(), Status(), Log(), Cancel(), List(), Describe(), Builtins(), RunOpts(), LocalSupervise()];

    private static Command Run()
    {
        var scheduler = new Option<string?>("--scheduler", "-s") { Description = "The scheduler (default: [cli:run] scheduler in .kilnconfig, else local).", HelpName = "name" };
        var schedulerArgs = new Option<string[]>("--scheduler-args", "-cfg") { Description = "Run options KEY=VALUE,… (kiln runopts lists them); over .kilnconfig's [SCHEDULER] section.", HelpName = "k=v,…" };
        var dryrun = new Option<bool>("--dryrun") { Description = "Print the app and the scheduler's request; submit nothing." };
        var wait = new Option<bool>("--wait") { Description = "Wait for the end, one line per state change on stderr; exit 0 SUCCEEDED, 1 FAILED or UNKNOWN, 130 CANCELLED." };
        var log = new Option<bool>("--log") { Description = "Follow every replica's output (implies --wait)." };
        var component = new Argument<string[]>("component") { Description = "COMPONENT [ARGS…]: a built-in (kiln builtins), or a component file; everything after it goes to the component.", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("run", "Build an app from a component and submit it to a scheduler (torchx run).") { scheduler, schedulerArgs, dryrun, wait, log, component };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter output = parse.InvocationConfiguration.Output;
            TextWriter error = parse.InvocationConfiguration.Error;
            try
            {
                RunArguments run = RunArguments.From(parse);
                KilnConfig config = LaunchSupport.LoadConfig();
                string schedulerName = run.Scheduler ?? config.Get("cli:run", "scheduler") ?? SchedulerCatalog.DefaultScheduler;
                IScheduler sut = SchedulerCatalog.Create(schedulerName, LaunchSupport.SchedulerContext());
                var options = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach ((string key, string value) in config.Section(schedulerName))
                {
                    // Keys of the config file that this scheduler does not take are left alone (they may be for another version).
                    if (sut.RunOptions.FirstOrDefault(o => string.Equals(o.Name, key, StringComparison.OrdinalIgnoreCase)) is { } known)
                    {
                        options[known.Name] = value;
                    }
                }
                foreach ((string key, string value) in LaunchSupport.ParseSchedulerArgs(run.SchedulerArgs))
                {
                    options[key] = value;
                }
                AppDef app = ComponentCatalog.Build(run.Component, run.ComponentArgs, LaunchSupport.ComponentContext(config));
                DryRunInfo request = sut.SubmitDryRun(app, options);
                if (LocalScheduler.IsInline(request) && !run.Wait && !run.Log && !run.DryRun)
                {
                    throw new LaunchException("supervise=inline needs --wait or --log: the submitting process watches the app and must stay.");
                }
                if (run.DryRun)
                {
                    await output.WriteLineAsync("=== APPLICATION ===").ConfigureAwait(false);
                    await output.WriteAsync(LaunchFormat.App(app).AsMemory(), cancellationToken).ConfigureAwait(false);
                    await output.WriteLineAsync($"=== SCHEDULER REQUEST ({sut.Name}) ===").ConfigureAwait(false);
                    await output.WriteLineAsync(request.Request.TrimEnd('\n').AsMemory(), cancellationToken).ConfigureAwait(false);
                    return LaunchSupport.SucceededExitCode;
                }
                try
                {
                    AppHandle handle = await sut.SubmitAsync(request, cancellationToken).ConfigureAwait(false);
                    await output.WriteLineAsync(handle.ToString()).ConfigureAwait(false);
                    await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                    if (!run.Wait && !run.Log)
                    {
                        return LaunchSupport.SucceededExitCode;
                    }
                    return await WaitAsync(sut, handle, run.Log, LocalScheduler.IsInline(request), output, error, cancellationToken).ConfigureAwait(false);
                }
                finally
                {
                    // Ends what this process supervises itself (supervise=inline): cancelled if it still runs.
                    if (sut is IAsyncDisposable disposable)
                    {
                        await disposable.DisposeAsync().ConfigureAwait(false);
                    }
                }
            }
            catch (LaunchException ex)
            {
                await error.WriteLineAsync($"kiln run: {FirstLine(ex.Message)}").ConfigureAwait(false);
                return LaunchSupport.UsageExitCode;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return LaunchSupport.CancelledExitCode;
            }
        });
        return command;
    }

    /// <summary>Waits for the app's end, printing state changes on stderr (and with <paramref name="follow"/>, every replica's output on stdout).</summary>
    private static async Task<int> WaitAsync(IScheduler scheduler, AppHandle handle, bool follow, bool inline, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        using var stopLogs = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Task logs = follow ? FollowAsync(scheduler, handle, null, null, new LogQuery { Tail = true }, output, stopLogs.Token) : Task.CompletedTask;
        AppState? last = null;
        AppStatus? status = null;
        try
        {
            while (true)
            {
                status = await scheduler.DescribeAsync(handle.AppId, cancellationToken).ConfigureAwait(false);
                if (status is null)
                {
                    await error.WriteLineAsync($"kiln run: {handle} is gone from {scheduler.Name}").ConfigureAwait(false);
                    return LaunchSupport.FailedExitCode;
                }
                if (status.State != last)
                {
                    last = status.State;
                    await error.WriteLineAsync($"kiln: {handle} {status.State.ToDisplay()}").ConfigureAwait(false);
                }
                if (status.State.IsTerminal() || status.State == AppState.Unknown)
                {
                    break;
                }
                await Task.Delay(s_waitPoll, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await error.WriteLineAsync(inline
                ? $"kiln: stopped; {handle} is cancelled (supervise=inline)"
                : $"kiln: stopped waiting; {handle} goes on (kiln cancel {handle} stops it)").ConfigureAwait(false);
            return LaunchSupport.CancelledExitCode;
        }
        if (follow)
        {
            // The followers end by themselves once their replicas did; bound it anyway.
            await Task.WhenAny(logs, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None)).ConfigureAwait(false);
            await stopLogs.CancelAsync().ConfigureAwait(false);
            await logs.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            await output.FlushAsync(CancellationToken.None).ConfigureAwait(false);
        }
        if (status.Message.Length > 0)
        {
            await error.WriteLineAsync($"kiln: {status.Message}").ConfigureAwait(false);
        }
        return status.State switch
        {
            AppState.Succeeded => LaunchSupport.SucceededExitCode,
            AppState.Cancelled => LaunchSupport.CancelledExitCode,
            _ => LaunchSupport.FailedExitCode,
        };
    }

    private static Command Status()
    {
        var handle = new Argument<string>("handle") { Description = "The app's handle, SCHEDULER://SESSION/APP_ID." };
        var command = new Command("status", "Show an app's state, restarts, message, first error and replicas (torchx status).") { handle };
        command.SetAction((parse, cancellationToken) => Guard("status", parse, async () =>
        {
            (IScheduler scheduler, AppHandle app) = LaunchSupport.Open(parse.GetValue(handle)!);
            AppStatus status = await scheduler.DescribeAsync(app.AppId, cancellationToken).ConfigureAwait(false)
                ?? throw new LaunchException($"{scheduler.Name} knows no app {app.AppId}.");
            await parse.InvocationConfiguration.Output.WriteAsync(LaunchFormat.Status(app, status).AsMemory(), cancellationToken).ConfigureAwait(false);
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command Describe()
    {
        var handle = new Argument<string>("handle") { Description = "The app's handle, SCHEDULER://SESSION/APP_ID." };
        var command = new Command("describe", "Show the app as submitted (roles, entrypoints, arguments, environment, retries) and its status (torchx describe).") { handle };
        command.SetAction((parse, cancellationToken) => Guard("describe", parse, async () =>
        {
            (IScheduler scheduler, AppHandle app) = LaunchSupport.Open(parse.GetValue(handle)!);
            AppStatus status = await scheduler.DescribeAsync(app.AppId, cancellationToken).ConfigureAwait(false)
                ?? throw new LaunchException($"{scheduler.Name} knows no app {app.AppId}.");
            TextWriter output = parse.InvocationConfiguration.Output;
            if (scheduler is LocalScheduler local && local.DescribeApp(app.AppId) is { } definition)
            {
                await output.WriteAsync(LaunchFormat.App(definition).AsMemory(), cancellationToken).ConfigureAwait(false);
            }
            await output.WriteAsync(LaunchFormat.Status(app, status).AsMemory(), cancellationToken).ConfigureAwait(false);
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command Log()
    {
        var identifier = new Argument<string>("handle") { Description = "SCHEDULER://SESSION/APP_ID[/ROLE[/REPLICA]]: every replica, a role's, or one." };
        var regex = new Option<string?>("--regex") { Description = "Only lines matching this regular expression.", HelpName = "regex" };
        var tail = new Option<bool>("--tail", "-t") { Description = "Keep following until the replicas end." };
        var since = new Option<string?>("--since") { Description = "Only lines written at or after this time: ISO 8601 (UTC unless an offset is given) or a duration before now (90s, 5m, 2h, 1d).", HelpName = "time" };
        var until = new Option<string?>("--until") { Description = "Only lines written before this time (same forms as --since).", HelpName = "time" };
        var streams = new Option<string>("--streams") { Description = "stdout, stderr or combined (default).", HelpName = "stream", DefaultValueFactory = _ => "combined" };
        streams.AcceptOnlyFromAmong("stdout", "stderr", "combined");
        var command = new Command("log", "Print replicas' output, each line prefixed ROLE/REPLICA (torchx log).") { identifier, regex, tail, since, until, streams };
        command.SetAction((parse, cancellationToken) => Guard("log", parse, async () =>
        {
            (string handleText, string? role, int? replica) = LaunchSupport.ParseLogIdentifier(parse.GetValue(identifier)!);
            (IScheduler scheduler, AppHandle app) = LaunchSupport.Open(handleText);
            DateTimeOffset now = TimeProvider.System.GetUtcNow();
            var query = new LogQuery
            {
                Regex = parse.GetValue(regex),
                Tail = parse.GetValue(tail),
                Since = parse.GetValue(since) is { } s ? LaunchSupport.ParseTime("--since", s, now) : null,
                Until = parse.GetValue(until) is { } u ? LaunchSupport.ParseTime("--until", u, now) : null,
                Stream = parse.GetValue(streams) is "combined" ? null : parse.GetValue(streams),
            };
            await FollowAsync(scheduler, app, role, replica, query, parse.InvocationConfiguration.Output, cancellationToken).ConfigureAwait(false);
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    /// <summary>Prints the lines of the chosen replicas, prefixed <c>ROLE/REPLICA</c>; replicas are read at the same time and their lines interleave as they come.</summary>
    private static async Task FollowAsync(IScheduler scheduler, AppHandle app, string? role, int? replica, LogQuery query, TextWriter output, CancellationToken cancellationToken)
    {
        AppStatus status = await scheduler.DescribeAsync(app.AppId, cancellationToken).ConfigureAwait(false)
            ?? throw new LaunchException($"{scheduler.Name} knows no app {app.AppId}.");
        if (role is not null && status.Roles.All(r => r.Role != role))
        {
            throw new LaunchException($"{app} has no role {role}; its roles are {string.Join(", ", status.Roles.Select(r => r.Role))}.");
        }
        List<(string Role, int Replica)> targets = [];
        foreach (RoleStatus r in status.Roles.Where(r => role is null || r.Role == role))
        {
            foreach (ReplicaStatus p in r.Replicas.Where(p => replica is null || p.Id == replica))
            {
                targets.Add((r.Role, p.Id));
            }
        }
        if (replica is not null && targets.Count == 0)
        {
            throw new LaunchException($"{app} role {role} has no replica {replica}.");
        }
        // Open every stream first, so a bad query is refused before anything is printed.
        List<(string Prefix, IAsyncEnumerable<string> Lines)> sources = [.. targets.Select(t => (
            $"{t.Role}/{t.Replica.ToString(CultureInfo.InvariantCulture)}",
            scheduler.LogAsync(app.AppId, t.Role, t.Replica, query, cancellationToken)))];
        if (sources.Count == 1 || !query.Tail)
        {
            foreach ((string prefix, IAsyncEnumerable<string> lines) in sources)
            {
                await foreach (string line in lines.ConfigureAwait(false))
                {
                    await output.WriteLineAsync($"{prefix} {line}").ConfigureAwait(false);
                }
            }
            return;
        }
        var channel = Channel.CreateBounded<string>(new BoundedChannelOptions(1024) { SingleReader = true });
        Task readers = Task.WhenAll(sources.Select(async source =>
        {
            await foreach (string line in source.Lines.ConfigureAwait(false))
            {
                await channel.Writer.WriteAsync($"{source.Prefix} {line}", cancellationToken).ConfigureAwait(false);
            }
        }));
        _ = readers.ContinueWith(t => channel.Writer.TryComplete(t.Exception?.InnerException), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        await foreach (string line in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            await output.WriteLineAsync(line).ConfigureAwait(false);
        }
        await readers.ConfigureAwait(false);
    }

    private static Command Cancel()
    {
        var handle = new Argument<string>("handle") { Description = "The app's handle, SCHEDULER://SESSION/APP_ID." };
        var command = new Command("cancel", "Cancel an app: its replicas get SIGTERM, then SIGKILL after the grace period (torchx cancel).") { handle };
        command.SetAction((parse, cancellationToken) => Guard("cancel", parse, async () =>
        {
            (IScheduler scheduler, AppHandle app) = LaunchSupport.Open(parse.GetValue(handle)!);
            await scheduler.CancelAsync(app.AppId, cancellationToken).ConfigureAwait(false);
            AppStatus? status = await scheduler.DescribeAsync(app.AppId, cancellationToken).ConfigureAwait(false);
            await parse.InvocationConfiguration.Output.WriteLineAsync($"{app} {status?.State.ToDisplay() ?? "CANCELLED"}").ConfigureAwait(false);
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command List()
    {
        var scheduler = new Option<string?>("--scheduler", "-s") { Description = "The scheduler (default: [cli:run] scheduler in .kilnconfig, else local).", HelpName = "name" };
        var command = new Command("list", "List a scheduler's apps: handle, state, name (torchx list).") { scheduler };
        command.SetAction((parse, cancellationToken) => Guard("list", parse, async () =>
        {
            string name = parse.GetValue(scheduler) ?? LaunchSupport.LoadConfig().Get("cli:run", "scheduler") ?? SchedulerCatalog.DefaultScheduler;
            IScheduler sut = SchedulerCatalog.Create(name, LaunchSupport.SchedulerContext());
            IReadOnlyList<ListedApp> apps = await sut.ListAsync(cancellationToken).ConfigureAwait(false);
            TextWriter output = parse.InvocationConfiguration.Output;
            int width = Math.Max("APP HANDLE".Length, apps.Count == 0 ? 0 : apps.Max(a => a.Handle.ToString().Length));
            await output.WriteLineAsync($"{"APP HANDLE".PadRight(width)}  {"STATE",-10}  NAME").ConfigureAwait(false);
            foreach (ListedApp app in apps)
            {
                await output.WriteLineAsync($"{app.Handle.ToString().PadRight(width)}  {app.State.ToDisplay(),-10}  {app.Name}").ConfigureAwait(false);
            }
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command Builtins()
    {
        var command = new Command("builtins", "List the components kiln run knows (built-ins and component files in .kiln/components/).");
        command.SetAction((parse, cancellationToken) => Guard("builtins", parse, async () =>
        {
            IReadOnlyList<ComponentInfo> components = ComponentCatalog.BuiltIns(LaunchSupport.ComponentContext(LaunchSupport.LoadConfig()));
            TextWriter output = parse.InvocationConfiguration.Output;
            int width = components.Count == 0 ? 0 : components.Max(c => c.Name.Length);
            await output.WriteLineAsync($"Found {components.Count} components:").ConfigureAwait(false);
            foreach (ComponentInfo component in components)
            {
                await output.WriteLineAsync($"  {component.Name.PadRight(width)}  {component.Description}".AsMemory(), cancellationToken).ConfigureAwait(false);
            }
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command RunOpts()
    {
        var scheduler = new Argument<string?>("scheduler") { Description = "One scheduler (default: every one).", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("runopts", "List the run options of the schedulers (--scheduler-args, .kilnconfig [SCHEDULER] keys).") { scheduler };
        command.SetAction((parse, cancellationToken) => Guard("runopts", parse, async () =>
        {
            TextWriter output = parse.InvocationConfiguration.Output;
            string? only = parse.GetValue(scheduler);
            foreach (string name in only is null ? SchedulerCatalog.Names : [only])
            {
                IScheduler sut;
                try
                {
                    sut = SchedulerCatalog.Create(name, LaunchSupport.SchedulerContext());
                }
                catch (LaunchException ex) when (only is null)
                {
                    await output.WriteLineAsync($"{name}: not available here: {FirstLine(ex.Message)}").ConfigureAwait(false);
                    continue;
                }
                await output.WriteLineAsync($"{name}:").ConfigureAwait(false);
                foreach (RunOption option in sut.RunOptions)
                {
                    string type = option.Required ? "required" : option.Default is null ? "optional" : $"default: {option.Default}";
                    await output.WriteLineAsync($"    {option.Name} ({type})\n        {option.Help}".AsMemory(), cancellationToken).ConfigureAwait(false);
                }
            }
            return LaunchSupport.SucceededExitCode;
        }));
        return command;
    }

    private static Command LocalSupervise()
    {
        var folder = new Argument<string>("app-folder") { Description = "The app's state folder (holding spec.json)." };
        var command = new Command("local-supervise", "Run and watch a local app's replicas (started by the local scheduler).") { folder };
        command.Hidden = true;
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter error = parse.InvocationConfiguration.Error;
            using var loggers = new LaunchSupport.WriterLoggerFactory(error, LogLevel.Information);
            try
            {
                // SIGTERM (the token) cancels the app: its replicas are stopped and CANCELLED is recorded.
                AppState state = await LocalSupervisor.RunAsync(parse.GetValue(folder)!, TimeProvider.System, loggers.CreateLogger("Kiln.Launch.Local"), cancellationToken).ConfigureAwait(false);
                return state == AppState.Succeeded ? LaunchSupport.SucceededExitCode : LaunchSupport.FailedExitCode;
            }
            catch (LaunchException ex)
            {
                await error.WriteLineAsync($"kiln local-supervise: {ex.Message}").ConfigureAwait(false);
                return LaunchSupport.UsageExitCode;
            }
        });
        return command;
    }

    /// <summary>Runs a verb's body; a <see cref="LaunchException"/> becomes one line on stderr and exit code 2.</summary>
    private static async Task<int> Guard(string verb, ParseResult parse, Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (LaunchException ex)
        {
            await parse.InvocationConfiguration.Error.WriteLineAsync($"kiln {verb}: {FirstLine(ex.Message)}").ConfigureAwait(false);
            return LaunchSupport.UsageExitCode;
        }
        catch (OperationCanceledException)
        {
            // Ctrl+C during kiln log --tail (or a slow cancel): Program reports the signal's exit code.
            return LaunchSupport.CancelledExitCode;
        }
    }

    private static string FirstLine(string message) => message.Split('\n')[0].TrimEnd('\r');

    /// <summary><c>kiln run</c>'s own options, read from the tokens up to the component; everything after it is the component's.</summary>
    private sealed record RunArguments(string? Scheduler, List<string> SchedulerArgs, bool DryRun, bool Wait, bool Log, string Component, List<string> ComponentArgs)
    {
        public static RunArguments From(ParseResult parse)
        {
            IReadOnlyList<Token> tokens = parse.Tokens;
            Token? verb = parse.CommandResult.IdentifierToken;
            int index = 0;
            while (index < tokens.Count && !(tokens[index].Type == TokenType.Command && tokens[index] == verb))
            {
                index++;
            }
            index++;
            string? scheduler = null;
            List<string> schedulerArgs = [];
            bool dryrun = false, wait = false, log = false;
            for (; index < tokens.Count; index++)
            {
                string value = tokens[index].Value;
                switch (value)
                {
                    case "-s" or "--scheduler":
                        scheduler = Next(tokens, ref index, value);
                        continue;
                    case "-cfg" or "--scheduler-args":
                        schedulerArgs.Add(Next(tokens, ref index, value));
                        continue;
                    case "--dryrun":
                        dryrun = true;
                        continue;
                    case "--wait":
                        wait = true;
                        continue;
                    case "--log":
                        log = true;
                        continue;
                    case "--":
                        continue;
                }
                if (tokens[index].Type != TokenType.Argument && value.StartsWith('-'))
                {
                    throw new LaunchException($"unknown option {value} before the component; kiln run takes -s, --scheduler-args, --dryrun, --wait and --log, then COMPONENT [ARGS…].");
                }
                return new RunArguments(scheduler, schedulerArgs, dryrun, wait, log, value, [.. tokens.Skip(index + 1).Select(t => t.Value)]);
            }
            throw new LaunchException("no component; e.g. kiln run utils.echo --msg hello (kiln builtins lists them).");
        }

        private static string Next(IReadOnlyList<Token> tokens, ref int index, string option)
        {
            if (index + 1 >= tokens.Count)
            {
                throw new LaunchException($"{option} needs a value.");
            }
            return tokens[++index].Value;
        }
    }
}
