using System.Globalization;
using System.Text.Json;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>One job, or one component of a heterogeneous job, as squeue or sacct reports it.</summary>
/// <param name="JobId">The app id: the job id, or for components the heterogeneous job's id.</param>
/// <param name="Offset">The component (0 for a plain job); component i runs role i.</param>
/// <param name="State">Slurm's state, e.g. <c>RUNNING</c>.</param>
/// <param name="Name">The job name (the app's name).</param>
internal sealed record SlurmJobRecord(string JobId, int Offset, string State, string Name)
{
    public string Nodes { get; init; } = "";

    public string WorkDir { get; init; } = "";

    public string Reason { get; init; } = "";

    public string User { get; init; } = "";

    public int Restarts { get; init; }
}

/// <summary>Parses squeue's JSON (22.05's flat values and the <c>{set, number}</c> objects of later versions), squeue's
/// <c>-o</c> text and sacct's <c>--parsable2</c> text.</summary>
internal static class SlurmJobRecords
{
    /// <summary>The field separator of the text formats (unit separator, never in names or paths).</summary>
    public const char Separator = '\u001f';

    /// <summary>squeue's <c>-o</c> format that <see cref="ParseSqueueText"/> reads.</summary>
    public static readonly string SqueueFormat = string.Join(Separator, "%i", "%T", "%j", "%N", "%r", "%u", "%Z");

    /// <summary>sacct's <c>--format</c> that <see cref="ParseSacct"/> reads.</summary>
    public const string SacctFormat = "JobID,JobName,State,NodeList,User,WorkDir";

    public static List<SlurmJobRecord> ParseSqueueJson(string json)
    {
        var records = new List<SlurmJobRecord>();
        using JsonDocument document = JsonDocument.Parse(json);
        if (!document.RootElement.TryGetProperty("jobs", out JsonElement jobs) || jobs.ValueKind != JsonValueKind.Array)
        {
            return records;
        }
        foreach (JsonElement job in jobs.EnumerateArray())
        {
            long id = Number(job, "job_id");
            long hetId = Number(job, "het_job_id");
            long offset = hetId != 0 ? Number(job, "het_job_offset") : 0;
            records.Add(new SlurmJobRecord((hetId != 0 ? hetId : id).ToString(CultureInfo.InvariantCulture), (int)offset, State(job), Text(job, "name"))
            {
                Nodes = Text(job, "nodes"),
                WorkDir = Text(job, "current_working_directory"),
                Reason = Text(job, "state_reason"),
                User = Text(job, "user_name"),
                Restarts = (int)Number(job, "restart_cnt"),
            });
        }
        return records;
    }

    /// <summary>Lines of <see cref="SqueueFormat"/>; het components read <c>ID+OFFSET</c>.</summary>
    public static List<SlurmJobRecord> ParseSqueueText(string text)
    {
        var records = new List<SlurmJobRecord>();
        foreach (string line in Lines(text))
        {
            string[] f = line.Split(Separator);
            if (f.Length < 7)
            {
                continue;
            }
            (string id, int offset) = SplitId(f[0]);
            records.Add(new SlurmJobRecord(id, offset, f[1], f[2]) { Nodes = f[3], Reason = f[4], User = f[5], WorkDir = f[6] });
        }
        return records;
    }

    /// <summary>Lines of <c>sacct --parsable2 --noheader --format=<see cref="SacctFormat"/></c>; steps (<c>ID.batch</c>) are skipped.</summary>
    public static List<SlurmJobRecord> ParseSacct(string text)
    {
        var records = new List<SlurmJobRecord>();
        foreach (string line in Lines(text))
        {
            string[] f = line.Split('|');
            if (f.Length < 6 || f[0].Contains('.', StringComparison.Ordinal))
            {
                continue;
            }
            (string id, int offset) = SplitId(f[0]);
            records.Add(new SlurmJobRecord(id, offset, f[2], f[1]) { Nodes = f[3], User = f[4], WorkDir = f[5] });
        }
        return records;
    }

    private static string[] Lines(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static (string Id, int Offset) SplitId(string field)
    {
        int plus = field.IndexOf('+', StringComparison.Ordinal);
        if (plus > 0 && int.TryParse(field.AsSpan(plus + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int offset))
        {
            return (field[..plus], offset);
        }
        return (field, 0);
    }

    private static string State(JsonElement job)
    {
        if (!job.TryGetProperty("job_state", out JsonElement state))
        {
            return "";
        }
        return state.ValueKind switch
        {
            JsonValueKind.String => state.GetString() ?? "",
            JsonValueKind.Array => state.EnumerateArray().Select(e => e.GetString()).FirstOrDefault(s => !string.IsNullOrEmpty(s)) ?? "",
            _ => "",
        };
    }

    private static string Text(JsonElement job, string name) =>
        job.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() ?? "" : "";

    /// <summary>A number: plain (22.05) or <c>{"set": true, "number": N}</c> (23.02 and later).</summary>
    private static long Number(JsonElement job, string name)
    {
        if (!job.TryGetProperty(name, out JsonElement value))
        {
            return 0;
        }
        if (value.ValueKind == JsonValueKind.Object)
        {
            if (value.TryGetProperty("set", out JsonElement set) && set.ValueKind == JsonValueKind.False)
            {
                return 0;
            }
            if (!value.TryGetProperty("number", out value))
            {
                return 0;
            }
        }
        return value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out long number) ? number : 0;
    }
}
