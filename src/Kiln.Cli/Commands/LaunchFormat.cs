using System.Globalization;
using System.Text;
using Kiln.Launch.Specs;

namespace Kiln.Cli.Commands;

/// <summary>How the launch verbs print apps and statuses.</summary>
internal static class LaunchFormat
{
    /// <summary>An app definition, one role after another.</summary>
    public static string App(AppDef app)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"app {app.Name}\n");
        foreach ((string key, string value) in app.Metadata)
        {
            text.Append(CultureInfo.InvariantCulture, $"  metadata {key}={value}\n");
        }
        foreach (Role role in app.Roles)
        {
            text.Append(CultureInfo.InvariantCulture, $"  role {role.Name}: {role.NumReplicas} replica(s)");
            if (role.MinReplicas is { } min)
            {
                text.Append(CultureInfo.InvariantCulture, $" (at least {min})");
            }
            text.Append(CultureInfo.InvariantCulture, $", cpu {role.Resource.Cpu}, gpu {role.Resource.Gpu}, memMB {role.Resource.MemMB}, max retries {role.MaxRetries}, retry policy {role.RetryPolicy.ToString().ToUpperInvariant()}\n");
            if (role.Image.Length > 0)
            {
                text.Append(CultureInfo.InvariantCulture, $"    image: {role.Image}\n");
            }
            text.Append(CultureInfo.InvariantCulture, $"    entrypoint: {role.Entrypoint}\n");
            if (role.Args.Count > 0)
            {
                text.Append(CultureInfo.InvariantCulture, $"    args: {string.Join(' ', role.Args.Select(Quote))}\n");
            }
            foreach ((string key, string value) in role.Env.OrderBy(e => e.Key, StringComparer.Ordinal))
            {
                text.Append(CultureInfo.InvariantCulture, $"    env {key}={value}\n");
            }
            foreach ((string name, int port) in role.PortMap)
            {
                text.Append(CultureInfo.InvariantCulture, $"    port {name}={port}\n");
            }
            foreach (Mount mount in role.Mounts)
            {
                text.Append(CultureInfo.InvariantCulture, $"    mount {mount.Source} -> {mount.Destination}{(mount.ReadOnly ? " (read-only)" : "")}\n");
            }
        }
        return text.ToString();
    }

    /// <summary>A status as <c>kiln status</c> prints it.</summary>
    public static string Status(AppHandle handle, AppStatus status)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"{handle}\n");
        text.Append(CultureInfo.InvariantCulture, $"  state: {status.State.ToDisplay()}\n");
        text.Append(CultureInfo.InvariantCulture, $"  restarts: {status.NumRestarts}\n");
        if (status.Message.Length > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"  message: {status.Message}\n");
        }
        if (status.StructuredError is { Length: > 0 } error)
        {
            text.Append(CultureInfo.InvariantCulture, $"  error: {error.Replace("\n", "\n    ", StringComparison.Ordinal)}\n");
        }
        text.Append("  roles:\n");
        foreach (RoleStatus role in status.Roles)
        {
            foreach (ReplicaStatus replica in role.Replicas)
            {
                text.Append(CultureInfo.InvariantCulture, $"    {role.Role}[{replica.Id}]: {replica.State.ToDisplay()}");
                if (replica.ExitCode is { } code)
                {
                    text.Append(CultureInfo.InvariantCulture, $" exit {code}");
                }
                if (replica.Hostname.Length > 0)
                {
                    text.Append(CultureInfo.InvariantCulture, $" on {replica.Hostname}");
                }
                text.Append('\n');
            }
        }
        return text.ToString();
    }

    private static string Quote(string value) =>
        value.Length > 0 && !value.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '\\' or '$' or ';' or '&' or '|')
            ? value
            : "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
