using System.Buffers;
using System.Text.Json;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Local;

/// <summary>
/// The local scheduler's files in JSON, written with <see cref="Utf8JsonWriter"/> and read with <see cref="JsonDocument"/>
/// by hand: both live precompiled in the shared framework, whereas serializer metadata for these types would be compiled
/// at every start of <c>kiln</c> (about half of the launcher's start-up cost).
/// </summary>
internal static class LocalJson
{
    private static readonly JsonWriterOptions s_indented = new() { Indented = true };

    public static byte[] Write(LocalAppSpec spec) => Write(s_indented, w =>
    {
        w.WriteStartObject();
        w.WriteString("app_id", spec.AppId);
        w.WriteString("session", spec.Session);
        w.WriteString("submitted", spec.Submitted);
        w.WriteNumber("cancel_grace_seconds", spec.CancelGraceSeconds);
        w.WriteStartArray("roles");
        foreach (LocalRoleSpec role in spec.Roles)
        {
            w.WriteStartObject();
            w.WriteString("name", role.Name);
            w.WriteNumber("max_retries", role.MaxRetries);
            w.WriteString("retry_policy", role.RetryPolicy.ToString());
            w.WriteStartArray("replicas");
            foreach (LocalReplicaSpec replica in role.Replicas)
            {
                w.WriteStartObject();
                w.WriteNumber("id", replica.Id);
                w.WriteString("entrypoint", replica.Entrypoint);
                WriteStrings(w, "args", replica.Args);
                WriteMap(w, "env", replica.Env);
                w.WriteString("working_directory", replica.WorkingDirectory);
                w.WriteString("log_directory", replica.LogDirectory);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        if (spec.App is { } app)
        {
            w.WritePropertyName("app");
            WriteApp(w, app);
        }
        w.WriteEndObject();
    });

    public static LocalAppSpec ReadSpec(byte[] json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        return new LocalAppSpec
        {
            AppId = root.GetProperty("app_id").GetString()!,
            Session = root.GetProperty("session").GetString()!,
            Submitted = root.GetProperty("submitted").GetDateTimeOffset(),
            CancelGraceSeconds = root.GetProperty("cancel_grace_seconds").GetDouble(),
            Roles = [.. root.GetProperty("roles").EnumerateArray().Select(r => new LocalRoleSpec
            {
                Name = r.GetProperty("name").GetString()!,
                MaxRetries = r.GetProperty("max_retries").GetInt32(),
                RetryPolicy = Enum.Parse<RetryPolicy>(r.GetProperty("retry_policy").GetString()!),
                Replicas = [.. r.GetProperty("replicas").EnumerateArray().Select(p => new LocalReplicaSpec
                {
                    Id = p.GetProperty("id").GetInt32(),
                    Entrypoint = p.GetProperty("entrypoint").GetString()!,
                    Args = ReadStrings(p.GetProperty("args")),
                    Env = ReadMap(p.GetProperty("env")),
                    WorkingDirectory = p.GetProperty("working_directory").GetString()!,
                    LogDirectory = p.GetProperty("log_directory").GetString()!,
                })],
            })],
            App = root.TryGetProperty("app", out JsonElement app) ? ReadApp(app) : null,
        };
    }

    public static byte[] Write(LocalAppState state) => Write(s_indented, w =>
    {
        w.WriteStartObject();
        w.WriteString("state", state.State.ToString());
        w.WriteNumber("num_restarts", state.NumRestarts);
        w.WriteString("message", state.Message);
        if (state.StructuredError is { } error)
        {
            w.WriteString("structured_error", error);
        }
        WriteIdentity(w, "supervisor", state.Supervisor);
        w.WriteString("submitted", state.Submitted);
        WriteTime(w, "started", state.Started);
        WriteTime(w, "ended", state.Ended);
        w.WriteStartArray("roles");
        foreach (LocalRoleState role in state.Roles)
        {
            w.WriteStartObject();
            w.WriteString("name", role.Name);
            w.WriteNumber("retries_used", role.RetriesUsed);
            w.WriteStartArray("replicas");
            foreach (LocalReplicaState replica in role.Replicas)
            {
                w.WriteStartObject();
                w.WriteNumber("id", replica.Id);
                w.WriteString("state", replica.State.ToString());
                WriteIdentity(w, "process", replica.Process);
                if (replica.ExitCode is { } code)
                {
                    w.WriteNumber("exit_code", code);
                }
                w.WriteNumber("restarts", replica.Restarts);
                WriteTime(w, "started", replica.Started);
                WriteTime(w, "ended", replica.Ended);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    });

    public static LocalAppState ReadState(byte[] json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        return new LocalAppState
        {
            State = Enum.Parse<AppState>(root.GetProperty("state").GetString()!),
            NumRestarts = root.GetProperty("num_restarts").GetInt32(),
            Message = root.GetProperty("message").GetString()!,
            StructuredError = root.TryGetProperty("structured_error", out JsonElement error) ? error.GetString() : null,
            Supervisor = ReadIdentity(root, "supervisor"),
            Submitted = root.GetProperty("submitted").GetDateTimeOffset(),
            Started = ReadTime(root, "started"),
            Ended = ReadTime(root, "ended"),
            Roles = [.. root.GetProperty("roles").EnumerateArray().Select(r => new LocalRoleState
            {
                Name = r.GetProperty("name").GetString()!,
                RetriesUsed = r.GetProperty("retries_used").GetInt32(),
                Replicas = [.. r.GetProperty("replicas").EnumerateArray().Select(p => new LocalReplicaState
                {
                    Id = p.GetProperty("id").GetInt32(),
                    State = Enum.Parse<AppState>(p.GetProperty("state").GetString()!),
                    Process = ReadIdentity(p, "process"),
                    ExitCode = p.TryGetProperty("exit_code", out JsonElement code) ? code.GetInt32() : null,
                    Restarts = p.GetProperty("restarts").GetInt32(),
                    Started = ReadTime(p, "started"),
                    Ended = ReadTime(p, "ended"),
                })],
            })],
        };
    }

    public static byte[] Write(ProcessIdentity identity) => Write(s_indented, w =>
    {
        w.WriteStartObject();
        w.WriteNumber("pid", identity.Pid);
        w.WriteNumber("start_time", identity.StartTime);
        w.WriteEndObject();
    });

    public static ProcessIdentity ReadIdentity(byte[] json)
    {
        using JsonDocument document = JsonDocument.Parse(json);
        return ToIdentity(document.RootElement);
    }

    /// <summary>One <c>combined.jsonl</c> line (without its newline) into <paramref name="buffer"/>.</summary>
    public static void WriteLogLine(ArrayBufferWriter<byte> buffer, DateTimeOffset time, string stream, string text)
    {
        using var w = new Utf8JsonWriter(buffer);
        w.WriteStartObject();
        w.WriteString("t", time);
        w.WriteString("s", stream);
        w.WriteString("l", text);
        w.WriteEndObject();
    }

    /// <summary>Reads one <c>combined.jsonl</c> line; null when it is not one.</summary>
    public static LocalLogLine? ReadLogLine(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        DateTimeOffset? time = null;
        string? stream = null;
        string? text = null;
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != 1)
                {
                    continue;
                }
                if (reader.ValueTextEquals("t"u8))
                {
                    reader.Read();
                    time = reader.GetDateTimeOffset();
                }
                else if (reader.ValueTextEquals("s"u8))
                {
                    reader.Read();
                    stream = reader.GetString();
                }
                else if (reader.ValueTextEquals("l"u8))
                {
                    reader.Read();
                    text = reader.GetString();
                }
            }
        }
        catch (Exception ex) when (ex is JsonException or FormatException or InvalidOperationException)
        {
            return null;
        }
        return time is { } t && stream is not null && text is not null ? new LocalLogLine(t, stream, text) : null;
    }

    private static void WriteApp(Utf8JsonWriter w, AppDef app)
    {
        w.WriteStartObject();
        w.WriteString("name", app.Name);
        WriteMap(w, "metadata", app.Metadata);
        w.WriteStartArray("roles");
        foreach (Role role in app.Roles)
        {
            w.WriteStartObject();
            w.WriteString("name", role.Name);
            w.WriteString("image", role.Image);
            w.WriteString("entrypoint", role.Entrypoint);
            WriteStrings(w, "args", role.Args);
            WriteMap(w, "env", role.Env);
            w.WriteNumber("num_replicas", role.NumReplicas);
            if (role.MinReplicas is { } min)
            {
                w.WriteNumber("min_replicas", min);
            }
            w.WriteStartObject("resource");
            w.WriteNumber("cpu", role.Resource.Cpu);
            w.WriteNumber("gpu", role.Resource.Gpu);
            w.WriteNumber("mem_mb", role.Resource.MemMB);
            w.WriteEndObject();
            w.WriteNumber("max_retries", role.MaxRetries);
            w.WriteString("retry_policy", role.RetryPolicy.ToString());
            w.WriteStartObject("port_map");
            foreach ((string name, int port) in role.PortMap)
            {
                w.WriteNumber(name, port);
            }
            w.WriteEndObject();
            w.WriteStartArray("mounts");
            foreach (Mount mount in role.Mounts)
            {
                w.WriteStartObject();
                w.WriteString("source", mount.Source);
                w.WriteString("destination", mount.Destination);
                w.WriteBoolean("read_only", mount.ReadOnly);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static AppDef ReadApp(JsonElement app) => new()
    {
        Name = app.GetProperty("name").GetString()!,
        Metadata = ReadMap(app.GetProperty("metadata")),
        Roles = [.. app.GetProperty("roles").EnumerateArray().Select(r => new Role
        {
            Name = r.GetProperty("name").GetString()!,
            Image = r.GetProperty("image").GetString()!,
            Entrypoint = r.GetProperty("entrypoint").GetString()!,
            Args = ReadStrings(r.GetProperty("args")),
            Env = ReadMap(r.GetProperty("env")),
            NumReplicas = r.GetProperty("num_replicas").GetInt32(),
            MinReplicas = r.TryGetProperty("min_replicas", out JsonElement min) ? min.GetInt32() : null,
            Resource = new Resource(
                r.GetProperty("resource").GetProperty("cpu").GetInt32(),
                r.GetProperty("resource").GetProperty("gpu").GetInt32(),
                r.GetProperty("resource").GetProperty("mem_mb").GetInt32()),
            MaxRetries = r.GetProperty("max_retries").GetInt32(),
            RetryPolicy = Enum.Parse<RetryPolicy>(r.GetProperty("retry_policy").GetString()!),
            PortMap = r.GetProperty("port_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt32(), StringComparer.Ordinal),
            Mounts = [.. r.GetProperty("mounts").EnumerateArray().Select(m => new Mount(
                m.GetProperty("source").GetString()!, m.GetProperty("destination").GetString()!, m.GetProperty("read_only").GetBoolean()))],
        })],
    };

    private static byte[] Write(JsonWriterOptions options, Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer, options))
        {
            write(writer);
        }
        return buffer.WrittenSpan.ToArray();
    }

    private static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (string value in values)
        {
            w.WriteStringValue(value);
        }
        w.WriteEndArray();
    }

    private static void WriteMap(Utf8JsonWriter w, string name, IEnumerable<KeyValuePair<string, string>> values)
    {
        w.WriteStartObject(name);
        foreach ((string key, string value) in values)
        {
            w.WriteString(key, value);
        }
        w.WriteEndObject();
    }

    private static void WriteIdentity(Utf8JsonWriter w, string name, ProcessIdentity? identity)
    {
        if (identity is null)
        {
            return;
        }
        w.WriteStartObject(name);
        w.WriteNumber("pid", identity.Pid);
        w.WriteNumber("start_time", identity.StartTime);
        w.WriteEndObject();
    }

    private static void WriteTime(Utf8JsonWriter w, string name, DateTimeOffset? time)
    {
        if (time is { } value)
        {
            w.WriteString(name, value);
        }
    }

    private static List<string> ReadStrings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    private static Dictionary<string, string> ReadMap(JsonElement map) => map.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal);

    private static ProcessIdentity? ReadIdentity(JsonElement parent, string name) => parent.TryGetProperty(name, out JsonElement value) ? ToIdentity(value) : null;

    private static ProcessIdentity ToIdentity(JsonElement value) => new(value.GetProperty("pid").GetInt32(), value.GetProperty("start_time").GetInt64());

    private static DateTimeOffset? ReadTime(JsonElement parent, string name) => parent.TryGetProperty(name, out JsonElement value) ? value.GetDateTimeOffset() : null;
}
