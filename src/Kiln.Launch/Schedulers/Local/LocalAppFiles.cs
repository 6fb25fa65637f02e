using System.Text.Json;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>What one replica runs, with macros applied: written once at submission (<c>spec.json</c>).</summary>
internal sealed class LocalReplicaSpec
{
    public int Id { get; set; }

    /// <summary>The entrypoint's full path.</summary>
    public string Entrypoint { get; set; } = "";

    public List<string> Args { get; set; } = [];

    /// <summary>Set on top of the supervisor's own environment (the submitter's).</summary>
    public Dictionary<string, string> Env { get; set; } = [];

    public string WorkingDirectory { get; set; } = "";

    /// <summary>The folder of <c>stdout.log</c>, <c>stderr.log</c> and <c>combined.jsonl</c>.</summary>
    public string LogDirectory { get; set; } = "";
}

/// <summary>One role at submission.</summary>
internal sealed class LocalRoleSpec
{
    public string Name { get; set; } = "";

    public int MaxRetries { get; set; }

    public RetryPolicy RetryPolicy { get; set; }

    public List<LocalReplicaSpec> Replicas { get; set; } = [];
}

/// <summary>An app as submitted to the local scheduler (<c>spec.json</c>, never changed afterwards).</summary>
internal sealed class LocalAppSpec
{
    public string AppId { get; set; } = "";

    public string Session { get; set; } = "";

    public DateTimeOffset Submitted { get; set; }

    /// <summary>Seconds between SIGTERM and SIGKILL when replicas are stopped.</summary>
    public double CancelGraceSeconds { get; set; }

    public List<LocalRoleSpec> Roles { get; set; } = [];

    /// <summary>The app as its component built it (for <c>kiln describe</c>).</summary>
    public AppDef? App { get; set; }
}

/// <summary>One replica's life (in <c>state.json</c>).</summary>
internal sealed class LocalReplicaState
{
    public int Id { get; set; }

    public AppState State { get; set; }

    /// <summary>The replica's process (also its process group and session), while it runs or last ran.</summary>
    public ProcessIdentity? Process { get; set; }

    public int? ExitCode { get; set; }

    /// <summary>Times this replica was started again after the first start.</summary>
    public int Restarts { get; set; }

    public DateTimeOffset? Started { get; set; }

    public DateTimeOffset? Ended { get; set; }
}

/// <summary>One role's life (in <c>state.json</c>).</summary>
internal sealed class LocalRoleState
{
    public string Name { get; set; } = "";

    /// <summary>Retries this role's failures used, of its max retries.</summary>
    public int RetriesUsed { get; set; }

    public List<LocalReplicaState> Replicas { get; set; } = [];
}

/// <summary>An app's life as the supervisor records it (<c>state.json</c>, replaced atomically on every change).</summary>
internal sealed class LocalAppState
{
    public AppState State { get; set; }

    public int NumRestarts { get; set; }

    public string Message { get; set; } = "";

    public string? StructuredError { get; set; }

    /// <summary>The supervisor process, once it runs.</summary>
    public ProcessIdentity? Supervisor { get; set; }

    public DateTimeOffset Submitted { get; set; }

    public DateTimeOffset? Started { get; set; }

    public DateTimeOffset? Ended { get; set; }

    public List<LocalRoleState> Roles { get; set; } = [];

    /// <summary>The state before anything ran: every replica pending.</summary>
    public static LocalAppState Initial(LocalAppSpec spec) => new()
    {
        State = AppState.Pending,
        Submitted = spec.Submitted,
        Roles = [.. spec.Roles.Select(r => new LocalRoleState
        {
            Name = r.Name,
            Replicas = [.. r.Replicas.Select(p => new LocalReplicaState { Id = p.Id, State = AppState.Pending })],
        })],
    };
}

/// <summary>One line of a replica's <c>combined.jsonl</c>: when it arrived, its stream (<c>stdout</c>/<c>stderr</c>) and its text.</summary>
internal sealed record LocalLogLine(DateTimeOffset T, string S, string L);

/// <summary>
/// The files of one local app: <c>STATE_DIR/APP_ID/{spec.json, state.json, supervisor.json, supervisor.log, cancel}</c>
/// and per replica <c>LOG_DIR/APP_ID/ROLE/REPLICA/{stdout.log, stderr.log, combined.jsonl}</c>.
/// </summary>
internal sealed class LocalAppFiles(string directory)
{
    /// <summary>The app's state folder.</summary>
    public string Directory { get; } = directory;

    public string SpecPath => Path.Combine(Directory, "spec.json");

    public string StatePath => Path.Combine(Directory, "state.json");

    /// <summary>Written by the submitter right after it started the supervisor.</summary>
    public string SupervisorPath => Path.Combine(Directory, "supervisor.json");

    public string SupervisorLogPath => Path.Combine(Directory, "supervisor.log");

    /// <summary>Its existence asks the supervisor to cancel the app.</summary>
    public string CancelPath => Path.Combine(Directory, "cancel");

    public static string StdoutPath(string replicaLogDirectory) => Path.Combine(replicaLogDirectory, "stdout.log");

    public static string StderrPath(string replicaLogDirectory) => Path.Combine(replicaLogDirectory, "stderr.log");

    public static string CombinedPath(string replicaLogDirectory) => Path.Combine(replicaLogDirectory, "combined.jsonl");

    public LocalAppSpec? ReadSpec() => Read(SpecPath, LocalJson.ReadSpec);

    public LocalAppState? ReadState() => Read(StatePath, LocalJson.ReadState);

    public ProcessIdentity? ReadSupervisor() => Read(SupervisorPath, LocalJson.ReadIdentity);

    public void WriteSpec(LocalAppSpec spec) => Write(SpecPath, LocalJson.Write(spec));

    public void WriteState(LocalAppState state) => Write(StatePath, LocalJson.Write(state));

    public void WriteSupervisor(ProcessIdentity supervisor) => Write(SupervisorPath, LocalJson.Write(supervisor));

    /// <summary>Writes to a temporary file and renames it over the target, so readers never see half a file.</summary>
    private static void Write(string path, byte[] json)
    {
        string temporary = $"{path}.{Environment.ProcessId}.tmp";
        File.WriteAllBytes(temporary, json);
        File.Move(temporary, path, overwrite: true);
    }

    private static T? Read<T>(string path, Func<byte[], T> parse)
        where T : class
    {
        try
        {
            return parse(File.ReadAllBytes(path));
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new LaunchException($"{path} is not a local app file Kiln can read: {ex.Message}", ex);
        }
    }
}
