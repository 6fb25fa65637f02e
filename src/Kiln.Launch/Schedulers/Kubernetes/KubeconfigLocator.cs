using k8s;
using k8s.Exceptions;

namespace Kiln.Launch.Schedulers.Kubernetes;

/// <summary>
/// Finds how to reach the cluster, as kubectl does: an explicit kubeconfig file, else the first existing file in
/// <c>$KUBECONFIG</c>, else <c>~/.kube/config</c>, else the in-cluster service account.
/// </summary>
internal sealed class KubeconfigLocator
{
    private readonly Func<string, string?> _environment;
    private readonly string _home;

    /// <summary>Creates a locator over an environment (tests pass their own); the home folder is <paramref name="home"/>, else <c>$HOME</c> of that environment, else the user's profile.</summary>
    public KubeconfigLocator(Func<string, string?>? environment = null, string? home = null)
    {
        _environment = environment ?? Environment.GetEnvironmentVariable;
        _home = home ?? (_environment("HOME") is { Length: > 0 } fromEnvironment ? fromEnvironment : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));
    }

    /// <summary>The client configuration.</summary>
    /// <exception cref="LaunchException">No kubeconfig anywhere, a missing explicit file, or a file that does not parse.</exception>
    public KubernetesClientConfiguration Load(string? explicitPath)
    {
        if (explicitPath is not null)
        {
            return File.Exists(explicitPath)
                ? FromFile(explicitPath)
                : throw new LaunchException($"kubernetes: kubeconfig {explicitPath} does not exist.");
        }
        string? variable = _environment("KUBECONFIG");
        foreach (string candidate in (variable ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (File.Exists(candidate))
            {
                return FromFile(candidate);
            }
        }
        string home = Path.Combine(_home, ".kube", "config");
        if (File.Exists(home))
        {
            return FromFile(home);
        }
        if (!string.IsNullOrEmpty(_environment("KUBERNETES_SERVICE_HOST")) && File.Exists("/var/run/secrets/kubernetes.io/serviceaccount/token"))
        {
            try
            {
                return KubernetesClientConfiguration.InClusterConfig();
            }
            catch (KubeConfigException ex)
            {
                throw new LaunchException($"kubernetes: the in-cluster service account is unusable: {ex.Message}", ex);
            }
        }
        string looked = string.IsNullOrWhiteSpace(variable) ? "$KUBECONFIG (unset)" : $"$KUBECONFIG ({variable})";
        throw new LaunchException($"kubernetes: no kubeconfig found; looked at {looked}, {home} and the in-cluster service account. Pass --scheduler-args kubeconfig=PATH or set KUBECONFIG.");
    }

    private static KubernetesClientConfiguration FromFile(string path)
    {
        try
        {
            return KubernetesClientConfiguration.BuildConfigFromConfigFile(path);
        }
        catch (Exception ex) when (ex is KubeConfigException or IOException or YamlDotNet.Core.YamlException or ArgumentException or InvalidOperationException)
        {
            throw new LaunchException($"kubernetes: kubeconfig {path} is unusable: {ex.Message}", ex);
        }
    }
}
