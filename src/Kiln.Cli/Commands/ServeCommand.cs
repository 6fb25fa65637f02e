using System.CommandLine;
using System.Globalization;
using Kiln.Serve;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln serve</c>: TorchServe-compatible inference and management APIs on 127.0.0.1 (torchserve's flags).</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var modelStore = new Option<string?>("--model-store") { Description = "Folder holding .mar archives (config.properties: model_store).", HelpName = "folder" };
        var models = new Option<string[]>("--models")
        {
            Description = "Archives to load at start: name=file.mar, file.mar, or all (config.properties: load_models).",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "name=file.mar|all",
        };
        var config = new Option<string?>("--ts-config") { Description = "A TorchServe config.properties (the keys Kiln honours are in docs/serve.md).", HelpName = "config.properties" };
        var ncs = new Option<bool>("--ncs") { Description = "No config snapshots: neither restore the newest snapshot from logs/config at start nor write new ones." };
        var disableTokenAuth = new Option<bool>("--disable-token-auth") { Description = "Turn token authorization off (config.properties: disable_token_authorization=true)." };
        var command = new Command("serve", "Serve .mar models over TorchServe's inference (8080) and management (8081) APIs on 127.0.0.1.")
        {
            modelStore,
            models,
            config,
            ncs,
            disableTokenAuth,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            TextWriter output = parse.InvocationConfiguration.Output;
            TextWriter error = parse.InvocationConfiguration.Error;
            var options = new ServeOptions();
            List<string> load = [];
            if (parse.GetValue(config) is { } configPath)
            {
                if (!File.Exists(configPath))
                {
                    await error.WriteLineAsync($"kiln serve: --ts-config {configPath} does not exist.").ConfigureAwait(false);
                    return 1;
                }
                string? problem = ApplyConfig(File.ReadAllLines(configPath), options, load);
                if (problem is not null)
                {
                    await error.WriteLineAsync($"kiln serve: {configPath}: {problem}").ConfigureAwait(false);
                    return 1;
                }
            }
            if (parse.GetValue(modelStore) is { } store)
            {
                options.ModelStore = store;
            }
            if (parse.GetValue(ncs))
            {
                options.NoConfigSnapshots = true;
            }
            if (parse.GetValue(disableTokenAuth))
            {
                options.DisableTokenAuthorization = true;
            }
            if (parse.GetValue(models) is { Length: > 0 } named)
            {
                load = [.. named.SelectMany(m => m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))];
            }
            if (string.IsNullOrEmpty(options.ModelStore) || !Directory.Exists(options.ModelStore))
            {
                await error.WriteLineAsync($"kiln serve: model store \"{options.ModelStore}\" is not an existing folder; pass --model-store.").ConfigureAwait(false);
                return 1;
            }
            KilnServer server = await KilnServer.StartAsync(options, cancellationToken: cancellationToken).ConfigureAwait(false);
            await using (server.ConfigureAwait(false))
            {
                if (server.RestoredFromSnapshot && load.Count > 0)
                {
                    await output.WriteLineAsync("serve: models restored from the newest snapshot; --models/load_models ignored (pass --ncs to load them instead)").ConfigureAwait(false);
                    load.Clear();
                }
                try
                {
                    foreach ((string? name, string file) in Expand(load, options.ModelStore))
                    {
                        (string model, string version) = await server.RegisterModelAsync(file, name, options.DefaultWorkersPerModel, cancellationToken).ConfigureAwait(false);
                        await output.WriteLineAsync($"serve: loaded {model} {version} from {file}").ConfigureAwait(false);
                    }
                }
                catch (ServeException ex)
                {
                    await error.WriteLineAsync($"kiln serve: {ex.Message}").ConfigureAwait(false);
                    return 1;
                }
                await output.WriteLineAsync($"serve: inference {server.InferenceAddress} management {server.ManagementAddress}").ConfigureAwait(false);
                await output.WriteLineAsync(server.KeyFile is { } keyFile
                    ? $"serve: token authorization on; keys in {keyFile} (send Authorization: Bearer <key>)"
                    : "serve: token authorization disabled").ConfigureAwait(false);
                await output.FlushAsync(cancellationToken).ConfigureAwait(false);
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    await output.WriteLineAsync("serve: draining in-flight requests").ConfigureAwait(false);
                }
                await server.StopAsync(CancellationToken.None).ConfigureAwait(false);
            }
            return 0;
        });
        return command;
    }

    private static IEnumerable<(string? Name, string File)> Expand(List<string> load, string store)
    {
        foreach (string item in load)
        {
            if (item == "all")
            {
                foreach (string mar in Directory.GetFiles(store, "*.mar").Order(StringComparer.Ordinal))
                {
                    yield return (null, Path.GetFileName(mar));
                }
                continue;
            }
            int equals = item.IndexOf('=', StringComparison.Ordinal);
            yield return equals > 0 ? (item[..equals], item[(equals + 1)..]) : (null, item);
        }
    }

    /// <summary>Applies the config.properties keys Kiln honours; returns a problem to report, or null.</summary>
    internal static string? ApplyConfig(IEnumerable<string> lines, ServeOptions options, List<string> load)
    {
        foreach (string raw in lines)
        {
            string line = raw.Trim();
            int equals = line.IndexOf('=', StringComparison.Ordinal);
            if (line.Length == 0 || line[0] is '#' or '!' || equals <= 0)
            {
                continue;
            }
            string key = line[..equals].Trim();
            string value = line[(equals + 1)..].Trim();
            switch (key)
            {
                case "disable_token_authorization":
                    if (!bool.TryParse(value, out bool disable))
                    {
                        return $"{key}={value} is not true or false.";
                    }
                    options.DisableTokenAuthorization = disable;
                    break;
                case "allowed_urls":
                    foreach (string pattern in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        options.AllowedUrls.Add(pattern);
                    }
                    break;
                case "model_store":
                    options.ModelStore = value;
                    break;
                case "load_models":
                    load.AddRange(value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
                    break;
                case "inference_address":
                case "management_address":
                case "metrics_address":
                    if (!Uri.TryCreate(value, UriKind.Absolute, out Uri? address) || !address.IsLoopback || address.Scheme != "http")
                    {
                        return $"{key}={value}: Kiln.Serve binds only http://127.0.0.1 so far.";
                    }
                    switch (key)
                    {
                        case "inference_address": options.InferencePort = address.Port; break;
                        case "management_address": options.ManagementPort = address.Port; break;
                        default: options.MetricsPort = address.Port; break;
                    }
                    break;
                case "grpc_inference_port":
                    if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int grpcPort) || grpcPort is < 0 or > 65535)
                    {
                        return $"{key}={value} is not a port number.";
                    }
                    options.GrpcPort = grpcPort;
                    break;
                case "job_queue_size":
                case "max_request_size":
                case "max_response_size":
                case "default_workers_per_model":
                case "default_response_timeout":
                case "unregister_model_timeout":
                    if (!long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long number) || number < 0 || (key is not ("max_request_size" or "max_response_size") && number > int.MaxValue))
                    {
                        return $"{key}={value} is not a non-negative integer.";
                    }
                    switch (key)
                    {
                        case "job_queue_size": options.JobQueueSize = (int)number; break;
                        case "max_request_size": options.MaxRequestSize = number; break;
                        case "max_response_size": options.MaxResponseSize = number; break;
                        case "default_workers_per_model": options.DefaultWorkersPerModel = (int)number; break;
                        case "default_response_timeout": options.DefaultResponseTimeoutSeconds = (int)number; break;
                        default: options.UnregisterTimeoutSeconds = (int)number; break;
                    }
                    break;
                default:
                    break; // other TorchServe keys are not implemented yet (docs/serve.md)
            }
        }
        return null;
    }
}
