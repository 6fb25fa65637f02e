using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using k8s;
using k8s.Models;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Schedulers.Kubernetes;

/// <summary>The Kubernetes objects of one app, as <see cref="KubernetesObjects.Build"/> made them.</summary>
/// <param name="Namespace">Where they go.</param>
/// <param name="Name">The app's name in the cluster (the Service's name, the prefix of every Job's name).</param>
/// <param name="Jobs">One batch/v1 Job per role, in role order.</param>
/// <param name="Service">The headless Service that gives each pod a DNS name.</param>
internal sealed record KubernetesApp(string Namespace, string Name, IReadOnlyList<V1Job> Jobs, V1Service Service)
{
    /// <summary>The app id in handles: <c>namespace:name</c> (as TorchX's kubernetes scheduler).</summary>
    public string AppId => $"{Namespace}:{Name}";

    /// <summary>Every object as one multi-document YAML text, Service first.</summary>
    public string ToYaml()
    {
        var yaml = new StringBuilder();
        yaml.Append(KubernetesYaml.Serialize(Service));
        foreach (V1Job job in Jobs)
        {
            yaml.Append("\n---\n").Append(KubernetesYaml.Serialize(job));
        }
        return yaml.Append('\n').ToString();
    }

    /// <summary>Reads the objects back from <see cref="ToYaml"/>'s text.</summary>
    /// <exception cref="LaunchException">The text is not a Service followed by Jobs.</exception>
    public static KubernetesApp FromYaml(string yaml)
    {
        List<object> objects;
        try
        {
            objects = KubernetesYaml.LoadAllFromString(yaml);
        }
        catch (Exception ex) when (ex is YamlDotNet.Core.YamlException or InvalidOperationException or ArgumentException)
        {
            throw new LaunchException($"kubernetes: the dry run's objects do not parse: {ex.Message}", ex);
        }
        V1Service service = objects.OfType<V1Service>().SingleOrDefault()
            ?? throw new LaunchException("kubernetes: the dry run's objects hold no Service.");
        V1Job[] jobs = [.. objects.OfType<V1Job>()];
        if (jobs.Length == 0)
        {
            throw new LaunchException("kubernetes: the dry run's objects hold no Job.");
        }
        return new KubernetesApp(service.Metadata.NamespaceProperty ?? KubernetesObjects.DefaultNamespace, service.Metadata.Name, jobs, service);
    }
}

/// <summary>
/// Turns an <see cref="AppDef"/> into Kubernetes objects: per role an Indexed batch/v1 Job (completions = parallelism =
/// replicas, so the completion index is the replica id), and one headless Service whose DNS gives every pod the name
/// <c>&lt;job&gt;-&lt;index&gt;.&lt;service&gt;</c>.
/// </summary>
internal static partial class KubernetesObjects
{
    /// <summary>The namespace when none is given.</summary>
    public const string DefaultNamespace = "default";

    /// <summary>The variable that holds rank 0's host name (<c>${rank0_env}</c>): the first role's replica 0.</summary>
    public const string Rank0HostVariable = "KILN_RANK0_HOST";

    /// <summary>The variable that holds the replica id (the Job's completion index).</summary>
    public const string ReplicaIdVariable = "KILN_REPLICA_ID";

    /// <summary>Label: the app's name in the cluster.</summary>
    public const string AppIdLabel = "kiln.app-id";

    /// <summary>Label: the role (its name as given, when it is a valid label value; else its name in the cluster).</summary>
    public const string RoleLabel = "kiln.role";

    /// <summary>Label Kubernetes (1.28+) puts on an Indexed Job's pods: the completion index, i.e. the replica id.</summary>
    public const string CompletionIndexLabel = "batch.kubernetes.io/job-completion-index";

    /// <summary>Annotation an Indexed Job's pods always carry: the completion index.</summary>
    public const string CompletionIndexAnnotation = "batch.kubernetes.io/job-completion-index";

    /// <summary>Annotation on the Jobs: the app's name as the user gave it.</summary>
    public const string AppNameAnnotation = "kiln.app-name";

    /// <summary>The resource name of NVIDIA GPUs (the device plugin's).</summary>
    public const string GpuResource = "nvidia.com/gpu";

    private const int MaxAppNameLength = 30;
    private const int MaxRoleNameLength = 16;

    /// <summary>Kubernetes expands <c>$(VAR)</c>; user text keeps its dollars by doubling them. Never in user text after escaping.</summary>
    private const int ReplicaSentinel = int.MinValue;

    /// <summary>Builds the objects; the app's cluster name is <c>&lt;name&gt;-&lt;8 hex&gt;</c>.</summary>
    /// <exception cref="LaunchException">A role without an image, names that do not fit Kubernetes, bad counts.</exception>
    public static KubernetesApp Build(AppDef app, KubernetesRunOptions options, string? suffix = null)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(options);
        if (app.Roles.Count == 0)
        {
            throw new LaunchException($"kubernetes: app \"{app.Name}\" has no roles.");
        }
        suffix ??= Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        string name = $"{AppNamePart(app.Name)}-{suffix}";
        string[] jobNames = JobNames(app, name);
        string rank0Host = $"{jobNames[0]}-0.{name}";
        var macros = new Macros(name, "", Rank0HostVariable);

        var jobs = new List<V1Job>(app.Roles.Count);
        for (int i = 0; i < app.Roles.Count; i++)
        {
            jobs.Add(BuildJob(app, app.Roles[i], jobNames[i], name, rank0Host, macros, options));
        }
        var service = new V1Service
        {
            ApiVersion = "v1",
            Kind = "Service",
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = options.Namespace,
                Labels = new Dictionary<string, string> { [AppIdLabel] = name, ["app.kubernetes.io/managed-by"] = "kiln" },
            },
            Spec = new V1ServiceSpec
            {
                ClusterIP = "None",
                Selector = new Dictionary<string, string> { [AppIdLabel] = name },
                // Rank 0 must resolve before its pod is ready: workers look it up while it starts.
                PublishNotReadyAddresses = true,
                Ports = ServicePorts(app),
            },
        };
        return new KubernetesApp(options.Namespace, name, jobs, service);
    }

    /// <summary>A label or annotation value, or null.</summary>
    public static string? Get(IDictionary<string, string>? values, string key) =>
        values is not null && values.TryGetValue(key, out string? value) ? value : null;

    /// <summary>The label value of a role: its name when Kubernetes accepts it, else its name in the cluster.</summary>
    public static string RoleLabelValue(string role) =>
        role.Length <= 63 && LabelValue().IsMatch(role) ? role : DnsLabel(role, MaxRoleNameLength);

    /// <summary>
    /// Text for a command, argument or environment value: macros applied, dollars doubled so that Kubernetes leaves them
    /// alone, and <c>${replica_id}</c> as <c>$(KILN_REPLICA_ID)</c>, which Kubernetes expands per pod.
    /// </summary>
    public static string ContainerText(string text, Role role, Macros macros)
    {
        string sentinel = ReplicaSentinel.ToString(CultureInfo.InvariantCulture);
        string applied = macros.Apply(text, role, ReplicaSentinel);
        return applied.Replace("$", "$$", StringComparison.Ordinal).Replace(sentinel, $"$({ReplicaIdVariable})", StringComparison.Ordinal);
    }

    /// <summary>A DNS-1123 label made from <paramref name="text"/>: lower case, [a-z0-9-], at most <paramref name="max"/> characters.</summary>
    public static string DnsLabel(string text, int max)
    {
        var label = new StringBuilder(text.Length);
        foreach (char c in text.ToLowerInvariant())
        {
            if (char.IsAsciiLetterOrDigit(c))
            {
                label.Append(c);
            }
            else if (label.Length > 0 && label[^1] != '-')
            {
                label.Append('-');
            }
        }
        string result = label.ToString();
        if (result.Length > max)
        {
            result = result[..max];
        }
        return result.Trim('-');
    }

    private static string AppNamePart(string appName)
    {
        string part = DnsLabel(appName, MaxAppNameLength);
        // Service names are DNS-1035 labels: they start with a letter.
        return part.Length > 0 && char.IsAsciiLetter(part[0]) ? part : DnsLabel("app-" + part, MaxAppNameLength);
    }

    private static string[] JobNames(AppDef app, string name)
    {
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        var names = new string[app.Roles.Count];
        for (int i = 0; i < app.Roles.Count; i++)
        {
            Role role = app.Roles[i];
            string part = DnsLabel(role.Name, MaxRoleNameLength);
            if (part.Length == 0)
            {
                throw new LaunchException($"kubernetes: role name \"{role.Name}\" has no letter or digit to name its Job.");
            }
            if (!seen.TryAdd(part, role.Name))
            {
                throw new LaunchException($"kubernetes: roles \"{seen[part]}\" and \"{role.Name}\" both become Job name suffix \"{part}\"; rename one.");
            }
            names[i] = $"{name}-{part}";
        }
        return names;
    }

    private static V1Job BuildJob(AppDef app, Role role, string jobName, string name, string rank0Host, Macros macros, KubernetesRunOptions options)
    {
        if (string.IsNullOrWhiteSpace(role.Image))
        {
            throw new LaunchException($"kubernetes: role {role.Name} has no image; Kubernetes runs containers (set the role's image; --image IMAGE for the built-in components).");
        }
        if (string.IsNullOrWhiteSpace(role.Entrypoint))
        {
            throw new LaunchException($"kubernetes: role {role.Name} has no entrypoint.");
        }
        if (role.NumReplicas < 1)
        {
            throw new LaunchException($"kubernetes: role {role.Name} asks for {role.NumReplicas} replicas; at least 1 is needed.");
        }
        if (role.MaxRetries < 0)
        {
            throw new LaunchException($"kubernetes: role {role.Name} has max retries {role.MaxRetries}; it must be 0 or more.");
        }
        Resource resource = role.Resource;
        if (resource.Cpu < 0 || resource.Gpu < 0 || resource.MemMB < 0)
        {
            throw new LaunchException($"kubernetes: role {role.Name} asks for negative resources ({resource}).");
        }

        var labels = new Dictionary<string, string> { [AppIdLabel] = name, [RoleLabel] = RoleLabelValue(role.Name) };
        var jobLabels = new Dictionary<string, string>(labels) { ["app.kubernetes.io/managed-by"] = "kiln" };
        var annotations = new Dictionary<string, string>(StringComparer.Ordinal) { [AppNameAnnotation] = app.Name };
        foreach ((string key, string value) in app.Metadata)
        {
            if (!AnnotationKey().IsMatch(key))
            {
                throw new LaunchException($"kubernetes: metadata key \"{key}\" is not a valid annotation key ([prefix/]name of letters, digits, '-', '_', '.').");
            }
            annotations[key] = value;
        }

        var env = new List<V1EnvVar>
        {
            // First, so that later values may refer to it as $(KILN_REPLICA_ID).
            new()
            {
                Name = ReplicaIdVariable,
                ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = $"metadata.annotations['{CompletionIndexAnnotation}']" } },
            },
            new() { Name = Rank0HostVariable, Value = rank0Host },
            new() { Name = "KILN_APP_ID", Value = name },
            new() { Name = "KILN_ROLE_NAME", Value = role.Name },
            new() { Name = "KILN_NUM_REPLICAS", Value = role.NumReplicas.ToString(CultureInfo.InvariantCulture) },
        };
        foreach ((string key, string value) in role.Env.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            env.Add(new V1EnvVar { Name = key, Value = ContainerText(value, role, macros) });
        }

        var quantities = new Dictionary<string, ResourceQuantity>
        {
            ["cpu"] = new ResourceQuantity(resource.Cpu.ToString(CultureInfo.InvariantCulture)),
            ["memory"] = new ResourceQuantity($"{resource.MemMB.ToString(CultureInfo.InvariantCulture)}Mi"),
        };
        if (resource.Gpu > 0)
        {
            quantities[GpuResource] = new ResourceQuantity(resource.Gpu.ToString(CultureInfo.InvariantCulture));
        }

        var volumes = new List<V1Volume>();
        var mounts = new List<V1VolumeMount>();
        for (int m = 0; m < role.Mounts.Count; m++)
        {
            Mount mount = role.Mounts[m];
            string volume = $"mount-{m}";
            volumes.Add(new V1Volume { Name = volume, HostPath = new V1HostPathVolumeSource { Path = mount.Source } });
            mounts.Add(new V1VolumeMount { Name = volume, MountPath = mount.Destination, ReadOnlyProperty = mount.ReadOnly });
        }

        var container = new V1Container
        {
            Name = DnsLabel(role.Name, 63) is { Length: > 0 } containerName ? containerName : "main",
            Image = role.Image,
            Command = [ContainerText(role.Entrypoint, role, macros)],
            Args = [.. role.Args.Select(a => ContainerText(a, role, macros))],
            Env = env,
            Resources = new V1ResourceRequirements
            {
                Requests = new Dictionary<string, ResourceQuantity>(quantities),
                Limits = new Dictionary<string, ResourceQuantity>(quantities),
            },
            Ports = role.PortMap.Count == 0 ? null : [.. role.PortMap.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => new V1ContainerPort { Name = PortName(p.Key), ContainerPort = p.Value })],
            VolumeMounts = mounts.Count == 0 ? null : mounts,
        };

        return new V1Job
        {
            ApiVersion = "batch/v1",
            Kind = "Job",
            Metadata = new V1ObjectMeta { Name = jobName, NamespaceProperty = options.Namespace, Labels = jobLabels, Annotations = annotations },
            Spec = new V1JobSpec
            {
                Completions = role.NumReplicas,
                Parallelism = role.NumReplicas,
                CompletionMode = "Indexed",
                BackoffLimit = role.MaxRetries,
                TtlSecondsAfterFinished = options.TtlSecondsAfterFinished,
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Labels = labels, Annotations = annotations },
                    Spec = new V1PodSpec
                    {
                        // A failed pod is replaced by the Job controller (counted against backoffLimit), not restarted in place.
                        RestartPolicy = "Never",
                        Subdomain = name,
                        Containers = [container],
                        Volumes = volumes.Count == 0 ? null : volumes,
                        ServiceAccountName = options.ServiceAccount,
                        PriorityClassName = options.PriorityClass,
                        ImagePullSecrets = options.ImagePullSecret is { } secret ? [new V1LocalObjectReference { Name = secret }] : null,
                    },
                },
            },
        };
    }

    private static List<V1ServicePort>? ServicePorts(AppDef app)
    {
        var ports = new List<V1ServicePort>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (Role role in app.Roles)
        {
            foreach ((string key, int port) in role.PortMap.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                string portName = PortName(key);
                if (names.Add(portName))
                {
                    ports.Add(new V1ServicePort { Name = portName, Port = port, TargetPort = port });
                }
            }
        }
        return ports.Count == 0 ? null : ports;
    }

    /// <summary>Port names are IANA service names: at most 15 characters, lower case, a letter among them.</summary>
    private static string PortName(string name)
    {
        string label = DnsLabel(name, 15);
        return label.Any(char.IsAsciiLetter) ? label : DnsLabel("p-" + label, 15);
    }

    [GeneratedRegex("^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")]
    private static partial Regex LabelValue();

    [GeneratedRegex("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")]
    private static partial Regex AnnotationKey();
}
