using System.Globalization;
using k8s.Models;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Kubernetes;

/// <summary>Reads app, role and replica states from Jobs and pods.</summary>
internal static class KubernetesStates
{
    /// <summary>
    /// A Job's state: cancelled while being deleted; failed or succeeded by its <c>Failed</c>/<c>Complete</c>
    /// conditions; running with a ready or active pod; pending otherwise.
    /// </summary>
    public static AppState JobState(V1Job job)
    {
        ArgumentNullException.ThrowIfNull(job);
        if (job.Metadata?.DeletionTimestamp is not null)
        {
            return AppState.Cancelled;
        }
        IList<V1JobCondition> conditions = job.Status?.Conditions ?? [];
        if (conditions.Any(c => c.Type is "Failed" or "FailureTarget" && c.Status == "True"))
        {
            return AppState.Failed;
        }
        if (conditions.Any(c => c.Type is "Complete" or "SuccessCriteriaMet" && c.Status == "True"))
        {
            return AppState.Succeeded;
        }
        if (conditions.Any(c => c.Type == "Suspended" && c.Status == "True"))
        {
            return AppState.Pending;
        }
        return (job.Status?.Ready ?? 0) > 0 || (job.Status?.Active ?? 0) > 0 ? AppState.Running : AppState.Pending;
    }

    /// <summary>The app's state from its roles': failed or cancelled if any is, succeeded if all are, running if any is.</summary>
    public static AppState AppStateOf(IReadOnlyCollection<AppState> roles)
    {
        ArgumentNullException.ThrowIfNull(roles);
        if (roles.Contains(AppState.Failed))
        {
            return AppState.Failed;
        }
        if (roles.Contains(AppState.Cancelled))
        {
            return AppState.Cancelled;
        }
        if (roles.Count > 0 && roles.All(s => s == AppState.Succeeded))
        {
            return AppState.Succeeded;
        }
        return roles.Contains(AppState.Running) || roles.Contains(AppState.Succeeded) ? AppState.Running : AppState.Pending;
    }

    /// <summary>A pod's replica id: its completion index label or annotation; -1 when it has neither.</summary>
    public static int ReplicaIndex(V1Pod pod)
    {
        ArgumentNullException.ThrowIfNull(pod);
        string? text = KubernetesObjects.Get(pod.Metadata?.Labels, KubernetesObjects.CompletionIndexLabel)
            ?? KubernetesObjects.Get(pod.Metadata?.Annotations, KubernetesObjects.CompletionIndexAnnotation);
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? index : -1;
    }

    /// <summary>A pod's state from its phase.</summary>
    public static AppState PodState(V1Pod pod) => pod?.Status?.Phase switch
    {
        "Pending" => AppState.Pending,
        "Running" => AppState.Running,
        "Succeeded" => AppState.Succeeded,
        "Failed" => AppState.Failed,
        _ => AppState.Unknown,
    };

    /// <summary>The app's status from its Jobs and pods.</summary>
    public static AppStatus Describe(IList<V1Job> jobs, IList<V1Pod> pods, string name)
    {
        ArgumentNullException.ThrowIfNull(jobs);
        ArgumentNullException.ThrowIfNull(pods);
        var roles = new List<RoleStatus>();
        var states = new List<AppState>();
        var messages = new List<string>();
        string? error = null;
        foreach (V1Job job in jobs.OrderBy(j => j.Metadata.CreationTimestamp ?? DateTime.MinValue).ThenBy(j => j.Metadata.Name, StringComparer.Ordinal))
        {
            string roleLabel = KubernetesObjects.Get(job.Metadata.Labels, KubernetesObjects.RoleLabel) ?? job.Metadata.Name;
            AppState state = JobState(job);
            states.Add(state);
            foreach (V1JobCondition condition in job.Status?.Conditions ?? [])
            {
                if (condition.Status == "True" && !string.IsNullOrEmpty(condition.Message))
                {
                    messages.Add($"{roleLabel}: {condition.Message}");
                }
            }
            var replicas = new List<ReplicaStatus>();
            foreach (IGrouping<int, V1Pod> index in pods
                .Where(p => KubernetesObjects.Get(p.Metadata?.Labels, KubernetesObjects.RoleLabel) == roleLabel)
                .GroupBy(ReplicaIndex)
                .Where(g => g.Key >= 0)
                .OrderBy(g => g.Key))
            {
                V1Pod pod = index.OrderByDescending(p => p.Metadata.CreationTimestamp ?? DateTime.MinValue).First();
                V1ContainerStateTerminated? terminated = pod.Status?.ContainerStatuses?.FirstOrDefault()?.State?.Terminated;
                AppState podState = PodState(pod);
                replicas.Add(new ReplicaStatus(index.Key, podState, roleLabel, $"{job.Metadata.Name}-{index.Key}.{name}") { ExitCode = terminated?.ExitCode });
                if (error is null && podState == AppState.Failed)
                {
                    string why = terminated is null ? pod.Status?.Reason ?? "failed" : $"exited with code {terminated.ExitCode}{(terminated.Reason is { } r ? $" ({r})" : "")}";
                    error = $"role {roleLabel} replica {index.Key} (pod {pod.Metadata.Name}) {why}{(terminated?.Message is { Length: > 0 } m ? ": " + m.Trim() : "")}";
                }
            }
            roles.Add(new RoleStatus(roleLabel, replicas));
        }
        return new AppStatus(AppStateOf(states))
        {
            NumRestarts = jobs.Sum(j => j.Status?.Failed ?? 0),
            Message = string.Join("; ", messages),
            StructuredError = error,
            Roles = roles,
        };
    }
}
