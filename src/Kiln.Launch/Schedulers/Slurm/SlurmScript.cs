using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Slurm;

/// <summary>
/// Writes the sbatch script of an app: one heterogeneous-job component per role (a plain job when the app has one role),
/// <c>--ntasks</c> = the role's replicas, and one job step (<c>srun --ntasks=1 --exact</c>) per replica with its own
/// log files and exit file in the job folder.
/// </summary>
/// <remarks>
/// Why per role and not per replica (TorchX's way): the replicas of a role ask for the same resources, a one-role app
/// then is a plain job that the main scheduler starts at once (Slurm starts heterogeneous jobs from the backfill
/// scheduler only, every <c>bf_interval</c>, 30 s by default), and the replicas of a role may share a node where they
/// fit, which components of one heterogeneous job never do.
/// </remarks>
internal static partial class SlurmScript
{
    /// <summary>The environment variable that holds the rank-0 host (the first node of the first role) in every replica.</summary>
    public const string Rank0Env = "KILN_RANK0_HOST";

    /// <summary>The environment variable that holds the Slurm node name of the rank-0 host.</summary>
    public const string Rank0NodeEnv = "KILN_RANK0_NODE";

    /// <summary>Stands for <c>${app_id}</c> until quoting turns it into <c>"$SLURM_JOB_ID"</c> (the app id is the job id).</summary>
    private const string AppIdToken = "\u0001SLURM_JOB_ID\u0001";

    /// <summary>The batch script's own output, beside the replicas' logs.</summary>
    public static string ScriptLog(string jobDir, string jobId, string stream) => Path.Combine(jobDir, $"slurm-{jobId}.{stream}");

    /// <summary>A replica's log: <c>slurm-JOBID-ROLE-REPLICA.out</c> or <c>.err</c>.</summary>
    public static string ReplicaLog(string jobDir, string jobId, string role, int replica, string extension) =>
        Path.Combine(jobDir, string.Create(CultureInfo.InvariantCulture, $"slurm-{jobId}-{role}-{replica}.{extension}"));

    /// <summary>The file that lists the app's roles and replica counts (<c>ROLE COUNT</c> per line), for describe and logs.</summary>
    public static string RolesFile(string jobDir, string jobId) => Path.Combine(jobDir, $"slurm-{jobId}.roles");

    /// <summary>The file the first replica to fail writes: <c>ROLE REPLICA EXIT_CODE</c>.</summary>
    public static string FirstFailureFile(string jobDir, string jobId) => Path.Combine(jobDir, $"slurm-{jobId}.failure");

    /// <summary>The roles file's text.</summary>
    public static string RolesText(AppDef app) =>
        string.Concat(app.Roles.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Name} {r.NumReplicas}\n")));

    /// <summary>Checks what the script cannot carry: names and counts.</summary>
    /// <exception cref="LaunchException">The app cannot run on Slurm; the message names every problem.</exception>
    public static void Validate(AppDef app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var errors = new List<string>();
        if (!NamePattern().IsMatch(app.Name))
        {
            errors.Add($"app name \"{app.Name}\" must be letters, digits, '.', '_' or '-' for a Slurm job name");
        }
        if (app.Roles.Count == 0)
        {
            errors.Add($"app \"{app.Name}\" has no roles");
        }
        foreach (var group in app.Roles.GroupBy(r => r.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            errors.Add($"role \"{group.Key}\" appears {group.Count()} times");
        }
        foreach (Role role in app.Roles)
        {
            if (!NamePattern().IsMatch(role.Name))
            {
                errors.Add($"role name \"{role.Name}\" must be letters, digits, '.', '_' or '-' (it names log files)");
            }
            if (string.IsNullOrWhiteSpace(role.Entrypoint))
            {
                errors.Add($"role \"{role.Name}\" has no entrypoint");
            }
            if (role.NumReplicas < 1)
            {
                errors.Add($"role \"{role.Name}\" has {role.NumReplicas} replicas; at least 1");
            }
            if (role.Resource.Cpu < 1 || role.Resource.Gpu < 0 || role.Resource.MemMB < 0)
            {
                errors.Add($"role \"{role.Name}\" asks for cpu={role.Resource.Cpu}, gpu={role.Resource.Gpu}, memMB={role.Resource.MemMB}; needs cpu ≥ 1, gpu ≥ 0, memMB ≥ 0");
            }
            foreach (string name in role.Env.Keys.Where(k => !EnvNamePattern().IsMatch(k)))
            {
                errors.Add($"role \"{role.Name}\": \"{name}\" is not an environment variable name");
            }
        }
        if (errors.Count > 0)
        {
            throw new LaunchException(string.Join("; ", errors));
        }
    }

    /// <summary>Writes the script.</summary>
    /// <param name="app">The app, already validated.</param>
    /// <param name="options">The parsed run options.</param>
    /// <param name="workingDirectory">Where replicas of roles without an image run (the submitter's current folder).</param>
    public static string Build(AppDef app, SlurmRunOptions options, string workingDirectory)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        Validate(app);
        string jobDir = options.JobDir;
        int maxRetries = app.Roles.Max(r => r.MaxRetries);
        bool het = app.Roles.Count > 1;
        var s = new StringBuilder();
        s.Append("#!/bin/bash\n");
        s.Append(CultureInfo.InvariantCulture, $"# Kiln app \"{app.Name}\" for Slurm (docs/launch-slurm.md): ");
        s.Append(het ? "a heterogeneous job, one component per role" : "one role, a plain job");
        s.Append("; each replica is one job step.\n");
        s.Append(CultureInfo.InvariantCulture, $"#SBATCH --job-name={app.Name}\n");
        s.Append(CultureInfo.InvariantCulture, $"#SBATCH --chdir={Directive(jobDir)}\n");
        s.Append(CultureInfo.InvariantCulture, $"#SBATCH --output={Directive(Path.Combine(jobDir, "slurm-%j.out"))}\n");
        s.Append(CultureInfo.InvariantCulture, $"#SBATCH --error={Directive(Path.Combine(jobDir, "slurm-%j.err"))}\n");
        s.Append("#SBATCH --open-mode=append\n");
        AppendIf(s, "comment", options.Comment);
        AppendIf(s, "mail-user", options.MailUser);
        AppendIf(s, "mail-type", options.MailType);
        for (int i = 0; i < app.Roles.Count; i++)
        {
            Role role = app.Roles[i];
            if (i > 0)
            {
                s.Append("#SBATCH hetjob\n");
            }
            s.Append(CultureInfo.InvariantCulture, $"# component {i}: role {role.Name}, {role.NumReplicas} replica(s)\n");
            s.Append(CultureInfo.InvariantCulture, $"#SBATCH --ntasks={role.NumReplicas} --cpus-per-task={role.Resource.Cpu}");
            if (!options.NoMemory && role.Resource.MemMB > 0)
            {
                int perCpu = (role.Resource.MemMB + role.Resource.Cpu - 1) / role.Resource.Cpu;
                s.Append(CultureInfo.InvariantCulture, $" --mem-per-cpu={perCpu}M");
            }
            if (role.Resource.Gpu > 0)
            {
                s.Append(CultureInfo.InvariantCulture, $" --gpus-per-task={role.Resource.Gpu}");
            }
            s.Append('\n');
            AppendIf(s, "partition", options.Partition);
            AppendIf(s, "time", options.Time);
            AppendIf(s, "account", options.Account);
            AppendIf(s, "qos", options.Qos);
            AppendIf(s, "constraint", options.Constraint);
            if (options.Exclusive)
            {
                s.Append("#SBATCH --exclusive\n");
            }
        }

        s.Append('\n');
        s.Append(CultureInfo.InvariantCulture, $"kiln_job_dir={Quote(jobDir)}\n");
        s.Append(CultureInfo.InvariantCulture, $"kiln_max_retries={maxRetries}\n");
        s.Append("# A restarted (requeued) job starts with no exit files; the roles file tells describe and logs the replicas.\n");
        s.Append("rm -f \"$kiln_job_dir/slurm-$SLURM_JOB_ID-\"*.exit \"$kiln_job_dir/slurm-$SLURM_JOB_ID.failure\"\n");
        s.Append(CultureInfo.InvariantCulture, $"printf '%s' {Quote(RolesText(app))} > \"$kiln_job_dir/slurm-$SLURM_JOB_ID.roles\"\n");
        s.Append("# The rank-0 node: the first node of the first role; replica 0 of that role runs there. The rank-0 host is its\n");
        s.Append("# address as Slurm reaches it (NodeAddr; the node name where Slurm does not say).\n");
        s.Append(CultureInfo.InvariantCulture, $"export {Rank0NodeEnv}=\"$(scontrol show hostnames \"${{SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}}\" | head -n 1)\"\n");
        s.Append(CultureInfo.InvariantCulture, $"kiln_rank0_addr=\"$(scontrol show node \"${Rank0NodeEnv}\" --oneliner 2>/dev/null | tr ' ' '\\n' | sed -n 's/^NodeAddr=//p')\"\n");
        s.Append(CultureInfo.InvariantCulture, $"export {Rank0Env}=\"${{kiln_rank0_addr:-${Rank0NodeEnv}}}\"\n");
        s.Append('\n');
        s.Append("# Runs one replica's step (kiln_replica ROLE REPLICA srun …) and records its exit code; the first replica to fail\n");
        s.Append("# also writes the failure file (created exclusively: set -C).\n");
        s.Append("kiln_replica() {\n");
        s.Append("  local role=$1 replica=$2\n");
        s.Append("  shift 2\n");
        s.Append("  \"$@\"\n");
        s.Append("  local rc=$?\n");
        s.Append("  echo \"$rc\" > \"$kiln_job_dir/slurm-$SLURM_JOB_ID-$role-$replica.exit\"\n");
        s.Append("  if [ \"$rc\" -ne 0 ]; then\n");
        s.Append("    (set -C; echo \"$role $replica $rc\" > \"$kiln_job_dir/slurm-$SLURM_JOB_ID.failure\") 2>/dev/null\n");
        s.Append("  fi\n");
        s.Append("  return \"$rc\"\n");
        s.Append("}\n");

        int total = 0;
        for (int i = 0; i < app.Roles.Count; i++)
        {
            Role role = app.Roles[i];
            string imageRoot = string.IsNullOrEmpty(role.Image) ? workingDirectory : role.Image;
            var macros = new Macros(AppIdToken, imageRoot, Rank0Env);
            for (int replica = 0; replica < role.NumReplicas; replica++)
            {
                Role applied = macros.ApplyTo(role, replica);
                string stem = string.Create(CultureInfo.InvariantCulture, $"\"$kiln_job_dir/slurm-$SLURM_JOB_ID-{role.Name}-{replica}");
                s.Append('\n');
                s.Append(CultureInfo.InvariantCulture, $"# {role.Name}/{replica}\n");
                s.Append(CultureInfo.InvariantCulture, $"kiln_replica {role.Name} {replica} \\\n  srun");
                if (het)
                {
                    s.Append(CultureInfo.InvariantCulture, $" --het-group={i}");
                }
                s.Append(" --nodes=1 --ntasks=1 --exact");
                if (i == 0 && replica == 0)
                {
                    s.Append(CultureInfo.InvariantCulture, $" --nodelist=\"${Rank0NodeEnv}\"");
                }
                s.Append(CultureInfo.InvariantCulture, $" --chdir={Quote(imageRoot)} --open-mode=append \\\n");
                s.Append(CultureInfo.InvariantCulture, $"    --output={stem}.out\" --error={stem}.err\" \\\n");
                s.Append(CultureInfo.InvariantCulture, $"    env -- KILN_ROLE_NAME={Quote(role.Name)} KILN_REPLICA_ID={replica} KILN_APP_ID=\"$SLURM_JOB_ID\"");
                foreach ((string key, string value) in applied.Env.OrderBy(e => e.Key, StringComparer.Ordinal))
                {
                    s.Append(' ').Append(Quote(key + "=" + value));
                }
                s.Append(" \\\n    ").Append(Quote(applied.Entrypoint));
                foreach (string arg in applied.Args)
                {
                    s.Append(' ').Append(Quote(arg));
                }
                s.Append(" &\n");
                total++;
            }
        }

        s.Append('\n');
        s.Append("# The first replica to fail ends the job (Slurm stops the other steps when this script exits).\n");
        s.Append("kiln_status=0\n");
        s.Append(CultureInfo.InvariantCulture, $"for _ in $(seq 1 {total}); do\n");
        s.Append("  wait -n\n");
        s.Append("  kiln_rc=$?\n");
        s.Append("  if [ \"$kiln_rc\" -ne 0 ]; then\n");
        s.Append("    kiln_status=$kiln_rc\n");
        s.Append("    break\n");
        s.Append("  fi\n");
        s.Append("done\n");
        s.Append("if [ \"$kiln_status\" -ne 0 ] && [ \"${SLURM_RESTART_COUNT:-0}\" -lt \"$kiln_max_retries\" ]; then\n");
        s.Append("  echo \"kiln: a replica exited with $kiln_status; requeueing the job (restart $((${SLURM_RESTART_COUNT:-0} + 1)) of $kiln_max_retries)\" >&2\n");
        s.Append("  scontrol requeue \"$SLURM_JOB_ID\"\n");
        s.Append("fi\n");
        s.Append("exit \"$kiln_status\"\n");
        return s.ToString();
    }

    /// <summary>Quotes a word for bash; <c>${app_id}</c> (after macros) becomes <c>"$SLURM_JOB_ID"</c>.</summary>
    internal static string Quote(string text)
    {
        if (text.Length == 0)
        {
            return "''";
        }
        string[] pieces = text.Split(AppIdToken);
        var result = new StringBuilder(text.Length + 8);
        for (int i = 0; i < pieces.Length; i++)
        {
            if (i > 0)
            {
                result.Append("\"$SLURM_JOB_ID\"");
            }
            if (pieces[i].Length > 0)
            {
                result.Append(SafeWordPattern().IsMatch(pieces[i]) ? pieces[i] : "'" + pieces[i].Replace("'", "'\\''", StringComparison.Ordinal) + "'");
            }
        }
        return result.ToString();
    }

    private static void AppendIf(StringBuilder s, string option, string? value)
    {
        if (value is not null)
        {
            s.Append(CultureInfo.InvariantCulture, $"#SBATCH --{option}={Directive(value)}\n");
        }
    }

    /// <summary>A value in an <c>#SBATCH</c> line: double-quoted when it holds spaces (the run options refuse quotes).</summary>
    private static string Directive(string value) => value.Any(char.IsWhiteSpace) ? "\"" + value + "\"" : value;

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvNamePattern();

    [GeneratedRegex("^[A-Za-z0-9_./:=,+@%-]+$")]
    private static partial Regex SafeWordPattern();
}
