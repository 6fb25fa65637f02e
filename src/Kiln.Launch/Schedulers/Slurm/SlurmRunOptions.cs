using System.Globalization;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>The slurm scheduler's run options (<c>--scheduler-args k=v,…</c>), parsed and checked.</summary>
internal sealed record SlurmRunOptions
{
    /// <summary>The options as <see cref="IScheduler.RunOptions"/> lists them.</summary>
    public static IReadOnlyList<RunOption> Declared { get; } =
    [
        new("partition", "The partition every role runs in (sbatch --partition); default: the cluster's default partition."),
        new("time", "The time limit of the job (sbatch --time), e.g. 30, 1:00:00 or 2-00:00:00; default: the partition's."),
        new("account", "The account charged (sbatch --account)."),
        new("qos", "The quality of service (sbatch --qos)."),
        new("comment", "A comment stored with the job (sbatch --comment)."),
        new("constraint", "Node features every role needs (sbatch --constraint), e.g. a100&ib."),
        new("mail_user", "Who gets mail about the job (sbatch --mail-user)."),
        new("mail_type", "Which events are mailed (sbatch --mail-type); default END,FAIL when mail_user is set."),
        new("exclusive", "true: no other job shares the nodes (sbatch --exclusive).", "false"),
        new("nomem", "true: ask for no memory (clusters that refuse --mem-per-cpu); Resource.MemMB is ignored.", "false"),
        new("job_dir", "The folder for the sbatch script, the logs (slurm-JOBID-ROLE-REPLICA.out/.err) and the exit files; it must be visible from the nodes.", "the current folder"),
    ];

    private static readonly System.Buffers.SearchValues<char> s_forbidden = System.Buffers.SearchValues.Create("\r\n\"\\`$");

    public string? Partition { get; init; }

    public string? Time { get; init; }

    public string? Account { get; init; }

    public string? Qos { get; init; }

    public string? Comment { get; init; }

    public string? Constraint { get; init; }

    public string? MailUser { get; init; }

    public string? MailType { get; init; }

    public bool Exclusive { get; init; }

    public bool NoMemory { get; init; }

    /// <summary>The absolute job folder.</summary>
    public required string JobDir { get; init; }

    /// <summary>Parses the options; unknown names and bad values fail together in one message.</summary>
    /// <exception cref="LaunchException">An unknown option or a bad value.</exception>
    public static SlurmRunOptions Parse(IReadOnlyDictionary<string, string> options, string currentDirectory)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        var known = Declared.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (string name in options.Keys.Where(k => !known.Contains(k)).Order(StringComparer.Ordinal))
        {
            errors.Add($"unknown slurm option \"{name}\" (known: {string.Join(", ", Declared.Select(o => o.Name))})");
        }

        string? Text(string name, bool allowSpaces = false)
        {
            if (!options.TryGetValue(name, out string? value) || string.IsNullOrWhiteSpace(value))
            {
                return null;
            }
            value = value.Trim();
            if (value.AsSpan().IndexOfAny(s_forbidden) >= 0 || (!allowSpaces && value.Any(char.IsWhiteSpace)))
            {
                errors.Add($"slurm option {name}=\"{value}\" holds a character sbatch directives cannot carry{(allowSpaces ? "" : " (spaces)")}, a quote, a backslash, $ or ` ");
                return null;
            }
            return value;
        }

        bool Flag(string name)
        {
            if (!options.TryGetValue(name, out string? value) || string.IsNullOrWhiteSpace(value))
            {
                return false;
            }
            switch (value.Trim().ToLowerInvariant())
            {
                case "true" or "1" or "yes" or "on":
                    return true;
                case "false" or "0" or "no" or "off":
                    return false;
                default:
                    errors.Add($"slurm option {name}=\"{value}\" is not a boolean (true or false)");
                    return false;
            }
        }

        string jobDir = Text("job_dir", allowSpaces: false) ?? currentDirectory;
        string? mailUser = Text("mail_user");
        var parsed = new SlurmRunOptions
        {
            Partition = Text("partition"),
            Time = Text("time"),
            Account = Text("account"),
            Qos = Text("qos"),
            Comment = Text("comment", allowSpaces: true),
            Constraint = Text("constraint"),
            MailUser = mailUser,
            MailType = Text("mail_type") ?? (mailUser is null ? null : "END,FAIL"),
            Exclusive = Flag("exclusive"),
            NoMemory = Flag("nomem"),
            JobDir = Path.GetFullPath(jobDir, currentDirectory),
        };
        if (errors.Count > 0)
        {
            throw new LaunchException(string.Join("; ", errors));
        }
        return parsed;
    }

    /// <summary>The options as text, for <see cref="DryRunInfo.Options"/>.</summary>
    public IReadOnlyDictionary<string, string> ToDictionary()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal) { ["job_dir"] = JobDir };
        void Add(string name, string? value)
        {
            if (value is not null)
            {
                result[name] = value;
            }
        }
        Add("partition", Partition);
        Add("time", Time);
        Add("account", Account);
        Add("qos", Qos);
        Add("comment", Comment);
        Add("constraint", Constraint);
        Add("mail_user", MailUser);
        Add("mail_type", MailType);
        result["exclusive"] = Exclusive.ToString(CultureInfo.InvariantCulture).ToLowerInvariant();
        result["nomem"] = NoMemory.ToString(CultureInfo.InvariantCulture).ToLowerInvariant();
        return result;
    }
}
