using System.Globalization;

namespace Kiln.Launch.Schedulers.Kubernetes;

/// <summary>The kubernetes scheduler's run options (<c>--scheduler-args k=v,…</c>, <c>.kilnconfig [kubernetes]</c>).</summary>
internal sealed record KubernetesRunOptions
{
    public const string NamespaceKey = "namespace";
    public const string KubeconfigKey = "kubeconfig";
    public const string ServiceAccountKey = "service_account";
    public const string PriorityClassKey = "priority_class";
    public const string ImagePullSecretKey = "image_pull_secret";
    public const string TtlKey = "ttl_seconds_after_finished";

    /// <summary>The options as <see cref="IScheduler.RunOptions"/> lists them.</summary>
    public static IReadOnlyList<RunOption> Descriptions { get; } =
    [
        new(NamespaceKey, "Namespace of the Jobs and the Service.", KubernetesObjects.DefaultNamespace),
        new(KubeconfigKey, "Kubeconfig file; default: $KUBECONFIG, then ~/.kube/config, then the in-cluster service account."),
        new(ServiceAccountKey, "Service account the pods run as."),
        new(PriorityClassKey, "Priority class of the pods."),
        new(ImagePullSecretKey, "Secret for pulling the images from a private registry."),
        new(TtlKey, "Seconds after which Kubernetes deletes a finished Job (and its pods and logs); default: never."),
    ];

    /// <summary>The namespace. Default: <c>default</c>.</summary>
    public string Namespace { get; init; } = KubernetesObjects.DefaultNamespace;

    /// <summary>A kubeconfig file, or null for the default locations.</summary>
    public string? Kubeconfig { get; init; }

    /// <summary>The pods' service account, or null for the namespace's default.</summary>
    public string? ServiceAccount { get; init; }

    /// <summary>The pods' priority class, or null.</summary>
    public string? PriorityClass { get; init; }

    /// <summary>An image pull secret, or null.</summary>
    public string? ImagePullSecret { get; init; }

    /// <summary>The Jobs' <c>ttlSecondsAfterFinished</c>, or null to keep them.</summary>
    public int? TtlSecondsAfterFinished { get; init; }

    /// <summary>Parses run options; unknown keys and bad values fail with the key named.</summary>
    /// <exception cref="LaunchException">An unknown key or a bad value.</exception>
    public static KubernetesRunOptions Parse(IReadOnlyDictionary<string, string> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var result = new KubernetesRunOptions();
        foreach ((string key, string raw) in options)
        {
            string value = raw.Trim();
            string? text = value.Length == 0 ? null : value;
            result = key switch
            {
                NamespaceKey => result with { Namespace = ValidNamespace(value) },
                KubeconfigKey => result with { Kubeconfig = text },
                ServiceAccountKey => result with { ServiceAccount = text },
                PriorityClassKey => result with { PriorityClass = text },
                ImagePullSecretKey => result with { ImagePullSecret = text },
                TtlKey => result with { TtlSecondsAfterFinished = text is null ? null : Seconds(text) },
                _ => throw new LaunchException($"kubernetes: unknown run option \"{key}\"; known: {string.Join(", ", Descriptions.Select(d => d.Name))}."),
            };
        }
        return result;
    }

    /// <summary>The options as a dictionary, only those set.</summary>
    public IReadOnlyDictionary<string, string> ToDictionary()
    {
        var options = new Dictionary<string, string>(StringComparer.Ordinal) { [NamespaceKey] = Namespace };
        Add(options, KubeconfigKey, Kubeconfig);
        Add(options, ServiceAccountKey, ServiceAccount);
        Add(options, PriorityClassKey, PriorityClass);
        Add(options, ImagePullSecretKey, ImagePullSecret);
        Add(options, TtlKey, TtlSecondsAfterFinished?.ToString(CultureInfo.InvariantCulture));
        return options;
    }

    private static void Add(Dictionary<string, string> options, string key, string? value)
    {
        if (value is not null)
        {
            options[key] = value;
        }
    }

    private static string ValidNamespace(string value) =>
        value.Length is > 0 and <= 63 && KubernetesObjects.DnsLabel(value, 63) == value
            ? value
            : throw new LaunchException($"kubernetes: namespace \"{value}\" is not a DNS label (lower-case letters, digits and '-', at most 63).");

    private static int Seconds(string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int seconds)
            ? seconds
            : throw new LaunchException($"kubernetes: {TtlKey}={value} is not a number of seconds.");
}
