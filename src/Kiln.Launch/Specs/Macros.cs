using System.Text;

namespace Kiln.Launch.Specs;

/// <summary>
/// TorchX's macros in role arguments and environment values: <c>${app_id}</c>, <c>${replica_id}</c>, <c>${role_name}</c>,
/// <c>${img_root}</c>, <c>${rank0_env}</c> (the name of the environment variable that holds the rank-0 host on this
/// scheduler) and <c>${num_replicas}</c>. Unknown <c>${…}</c> are left as they are; <c>$${x}</c> escapes one.
/// </summary>
public sealed record Macros(string AppId, string ImageRoot, string Rank0Env)
{
    /// <summary>Replaces the macros for one replica of a role.</summary>
    public string Apply(string text, Role role, int replicaId)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(role);
        if (!text.Contains("${", StringComparison.Ordinal))
        {
            return text;
        }
        var result = new StringBuilder(text.Length + 16);
        int i = 0;
        while (i < text.Length)
        {
            if (text[i] == '$' && i + 2 < text.Length && text[i + 1] == '$' && text[i + 2] == '{')
            {
                result.Append("${");
                i += 3;
                continue;
            }
            if (text[i] == '$' && i + 1 < text.Length && text[i + 1] == '{')
            {
                int close = text.IndexOf('}', i + 2);
                if (close > 0)
                {
                    string name = text[(i + 2)..close];
                    string? value = name switch
                    {
                        "app_id" => AppId,
                        "replica_id" => replicaId.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        "role_name" => role.Name,
                        "img_root" => ImageRoot,
                        "rank0_env" => Rank0Env,
                        "num_replicas" => role.NumReplicas.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        _ => null,
                    };
                    if (value is not null)
                    {
                        result.Append(value);
                        i = close + 1;
                        continue;
                    }
                }
            }
            result.Append(text[i]);
            i++;
        }
        return result.ToString();
    }

    /// <summary>The role with macros applied to its arguments and environment for one replica.</summary>
    public Role ApplyTo(Role role, int replicaId)
    {
        ArgumentNullException.ThrowIfNull(role);
        return role with
        {
            Args = [.. role.Args.Select(a => Apply(a, role, replicaId))],
            Env = role.Env.ToDictionary(e => e.Key, e => Apply(e.Value, role, replicaId)),
            Entrypoint = Apply(role.Entrypoint, role, replicaId),
        };
    }
}
