namespace Kiln.Serve;

/// <summary>How a <see cref="KilnServer"/> listens and what it allows (TorchServe's config.properties keys in brackets).</summary>
public sealed class ServeOptions
{
    /// <summary>The folder holding <c>.mar</c> files; <c>POST /models?url=</c> names a file in it [model_store]. Required.</summary>
    public string ModelStore { get; set; } = "";

    /// <summary>Inference API port on 127.0.0.1; 0 picks a free one [inference_address]. Default: 8080.</summary>
    public int InferencePort { get; set; } = 8080;

    /// <summary>Management API port on 127.0.0.1; 0 picks a free one [management_address]. Default: 8081.</summary>
    public int ManagementPort { get; set; } = 8081;

    /// <summary>Metrics API port on 127.0.0.1 (<c>GET /metrics</c>, Prometheus text); 0 picks a free one [metrics_address]. Default: 8082.</summary>
    public int MetricsPort { get; set; } = 8082;

    /// <summary>Open Inference Protocol gRPC port on 127.0.0.1 (HTTP/2 cleartext); 0 picks a free one [grpc_inference_port]. Default: 7070.</summary>
    public int GrpcPort { get; set; } = 7070;

    /// <summary>Largest request body in bytes; larger ones get 413 [max_request_size]. Default: 6553500.</summary>
    public long MaxRequestSize { get; set; } = 6_553_500;

    /// <summary>Largest response body in bytes; a prediction whose response is larger fails with 413 [max_response_size]. Default: 6553500.</summary>
    public long MaxResponseSize { get; set; } = 6_553_500;

    /// <summary>Most bytes an archive may expand to on registration. Default: 4 GiB.</summary>
    public long MaxArchiveSize { get; set; } = 4L << 30;

    /// <summary>Per-model queue capacity; a full queue answers 503 [job_queue_size]. Default: 100.</summary>
    public int JobQueueSize { get; set; } = 100;

    /// <summary>Workers a model started at launch gets when its config names none [default_workers_per_model]. Default: 1.</summary>
    public int DefaultWorkersPerModel { get; set; } = 1;

    /// <summary>Seconds a prediction may wait for its response before it fails with 500 [default_response_timeout]. Default: 120.</summary>
    public int DefaultResponseTimeoutSeconds { get; set; } = 120;

    /// <summary>ONNX Runtime threads per operator per model version; 0 lets ONNX Runtime use one per core. Default: 0.</summary>
    public int IntraOpThreads { get; set; }

    /// <summary>Where archives are extracted; each model version gets its own folder, deleted on unregister. Default: a folder under the system temp folder.</summary>
    public string? WorkDirectory { get; set; }

    /// <summary>Seconds <c>DELETE /models</c> and shutdown wait for in-flight requests [unregister_model_timeout]. Default: 120.</summary>
    public int UnregisterTimeoutSeconds { get; set; } = 120;

    /// <summary>Turns token authorization off: no key file, no <c>Authorization</c> header needed [disable_token_authorization]. Default: false.</summary>
    public bool DisableTokenAuthorization { get; set; }

    /// <summary>Where the key file with the management and inference keys is written (mode 0600). Default: <c>key_file.json</c> in the working folder.</summary>
    public string? KeyFile { get; set; }

    /// <summary>
    /// Regular expressions a model URL with a scheme (http, https, file) must match in full to be registered [allowed_urls,
    /// comma-separated]. Default: none, so only <c>.mar</c> file names in the model store are accepted.
    /// </summary>
    public IList<string> AllowedUrls { get; } = [];

    /// <summary>Where snapshots of the registered models are written after each management change and read at start. Default: <c>logs/config</c> in the working folder.</summary>
    public string? SnapshotDirectory { get; set; }

    /// <summary>Neither writes nor restores snapshots (<c>--ncs</c>). Default: false.</summary>
    public bool NoConfigSnapshots { get; set; }
}
