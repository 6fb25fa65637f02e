using System.Net;
using System.Security.Cryptography;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Kiln.Serve.Inference;
using Kiln.Serve.Protocols.Grpc;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Protocols;

/// <summary>
/// The Open Inference Protocol's gRPC service (<c>inference.GRPCInferenceService</c>): ServerLive, ServerReady,
/// ModelReady, ModelMetadata and ModelInfer (FP32, <c>fp32_contents</c> or <c>raw_input_contents</c>), through the
/// same tensor-handler queue as the REST API. With token authorization on, calls need <c>authorization: Bearer &lt;inference key&gt;</c>.
/// </summary>
internal sealed class GrpcInference(ModelRegistry registry, OpenInferenceApi api, string? inferenceKey) : GRPCInferenceService.GRPCInferenceServiceBase
{
    private void Authorize(ServerCallContext context)
    {
        if (inferenceKey is null)
        {
            return;
        }
        string? header = context.RequestHeaders.GetValue("authorization");
        if (header is null || !header.StartsWith("Bearer ", StringComparison.Ordinal))
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "Send authorization: Bearer <inference key> (see key_file.json)."));
        }
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header["Bearer ".Length..]), Encoding.UTF8.GetBytes(inferenceKey)))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "The token is not the inference key."));
        }
    }

    private static RpcException ToRpc(ServeException ex) => new(new Status(ex.StatusCode switch
    {
        400 or 413 => StatusCode.InvalidArgument,
        404 => StatusCode.NotFound,
        503 => StatusCode.Unavailable,
        _ => StatusCode.Internal,
    }, ex.Message));

    private ModelVersionHost Resolve(string name, string version)
    {
        try
        {
            return registry.Resolve(name, string.IsNullOrEmpty(version) ? null : version);
        }
        catch (ServeException ex)
        {
            throw ToRpc(ex);
        }
    }

    public override Task<ServerLiveResponse> ServerLive(ServerLiveRequest request, ServerCallContext context)
    {
        Authorize(context);
        return Task.FromResult(new ServerLiveResponse { Live = true });
    }

    public override Task<ServerReadyResponse> ServerReady(ServerReadyRequest request, ServerCallContext context)
    {
        Authorize(context);
        return Task.FromResult(new ServerReadyResponse { Ready = true });
    }

    public override Task<ModelReadyResponse> ModelReady(ModelReadyRequest request, ServerCallContext context)
    {
        Authorize(context);
        return Task.FromResult(new ModelReadyResponse { Ready = Resolve(request.Name, request.Version).WorkerCount > 0 });
    }

    public override Task<ModelMetadataResponse> ModelMetadata(ModelMetadataRequest request, ServerCallContext context)
    {
        Authorize(context);
        ModelVersionHost host = Resolve(request.Name, request.Version);
        var response = new ModelMetadataResponse { Name = host.Name, Platform = (host.Handler as TensorHandler)?.Model.Platform ?? "onnxruntime_onnx" };
        response.Versions.AddRange(registry.Describe(host.Name, "all").Select(v => v.Version));
        if ((host.Handler as TensorHandler)?.Model is { } model)
        {
            response.Inputs.Add(Metadata(model.InputName, model.InputDimensions));
            for (int i = 0; i < model.OutputNames.Count; i++)
            {
                response.Outputs.Add(Metadata(model.OutputNames[i], model.OutputDimensions[i]));
            }
        }
        return Task.FromResult(response);
    }

    private static ModelMetadataResponse.Types.TensorMetadata Metadata(string name, long[] dimensions)
    {
        var tensor = new ModelMetadataResponse.Types.TensorMetadata { Name = name, Datatype = "FP32" };
        tensor.Shape.AddRange(dimensions.Select(d => d <= 0 ? -1 : d));
        return tensor;
    }

    public override async Task<ModelInferResponse> ModelInfer(ModelInferRequest request, ServerCallContext context)
    {
        Authorize(context);
        ModelVersionHost host = Resolve(request.ModelName, request.ModelVersion);
        long startedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        int status = 500;
        try
        {
            ModelBackend model = (host.Handler as TensorHandler)?.Model
                ?? throw ServeException.BadRequest($"Model \"{host.Name}\" uses handler \"{host.Archive.Manifest.Handler}\"; the Open Inference Protocol serves models with the tensor handler.");
            FloatTensor input = Input(request, model);
            FloatTensor[] outputs = await api.RunAsync(host, model, input, context.CancellationToken).ConfigureAwait(false);
            var response = new ModelInferResponse { ModelName = host.Name, ModelVersion = host.Version, Id = request.Id };
            bool raw = request.RawInputContents.Count > 0;
            List<int> wanted = request.Outputs.Count == 0
                ? [.. Enumerable.Range(0, model.OutputNames.Count)]
                : [.. request.Outputs.Select(o => IndexOf(model, o.Name))];
            foreach (int index in wanted)
            {
                var tensor = new ModelInferResponse.Types.InferOutputTensor { Name = model.OutputNames[index], Datatype = "FP32" };
                tensor.Shape.AddRange(outputs[index].Shape);
                if (raw)
                {
                    response.RawOutputContents.Add(ByteString.CopyFrom(TensorJson.Little(outputs[index].Data)));
                }
                else
                {
                    tensor.Contents = new InferTensorContents();
                    tensor.Contents.Fp32Contents.AddRange(outputs[index].Data);
                }
                response.Outputs.Add(tensor);
            }
            status = 200;
            return response;
        }
        catch (ServeException ex)
        {
            status = ex.StatusCode;
            throw ToRpc(ex);
        }
        finally
        {
            registry.Metrics.Request(host.Name, host.Version, status, startedAt);
        }
    }

    private static int IndexOf(ModelBackend model, string name)
    {
        for (int i = 0; i < model.OutputNames.Count; i++)
        {
            if (model.OutputNames[i] == name)
            {
                return i;
            }
        }
        throw ServeException.BadRequest($"Requested output '{name}' is not one of the model's outputs ({string.Join(", ", model.OutputNames)}).");
    }

    private static FloatTensor Input(ModelInferRequest request, ModelBackend model)
    {
        if (request.Inputs.Count != 1)
        {
            throw ServeException.BadRequest($"The model takes one input, '{model.InputName}'; the request has {request.Inputs.Count}.");
        }
        ModelInferRequest.Types.InferInputTensor input = request.Inputs[0];
        if (input.Name != model.InputName)
        {
            throw ServeException.BadRequest($"Input '{input.Name}' is not the model's input; its input is '{model.InputName}'.");
        }
        if (input.Datatype != "FP32")
        {
            throw ServeException.BadRequest($"Input '{input.Name}' has datatype {input.Datatype}; the model takes FP32.");
        }
        long[] shape = [.. input.Shape];
        if (shape.Any(d => d < 0))
        {
            throw ServeException.BadRequest($"Input '{input.Name}' has a negative dimension.");
        }
        long count = FloatTensor.Count(shape);
        float[] data;
        if (request.RawInputContents.Count > 0)
        {
            if (request.RawInputContents.Count != 1 || request.RawInputContents[0].Length != count * sizeof(float))
            {
                throw ServeException.BadRequest($"Input '{input.Name}' of shape [{string.Join(",", shape)}] needs {count * sizeof(float)} raw bytes; raw_input_contents has {request.RawInputContents.Sum(r => (long)r.Length)}.");
            }
            data = TensorJson.FromLittle(request.RawInputContents[0].Span);
        }
        else
        {
            data = input.Contents is null ? [] : [.. input.Contents.Fp32Contents];
            if (data.Length != count)
            {
                throw ServeException.BadRequest($"Input '{input.Name}' has {data.Length} fp32_contents; shape [{string.Join(",", shape)}] needs {count}.");
            }
        }
        InferRequest.CheckShape(model.InputName, shape, model);
        return new FloatTensor(data, shape);
    }
}

/// <summary>The gRPC listener (HTTP/2 cleartext) on its own port bound to 127.0.0.1.</summary>
internal sealed class GrpcEndpoint : IAsyncDisposable
{
    private readonly WebApplication _app;

    private GrpcEndpoint(WebApplication app) => _app = app;

    /// <summary>The bound address, e.g. http://127.0.0.1:7070/.</summary>
    public Uri Address { get; private set; } = null!;

    public static async Task<GrpcEndpoint> StartAsync(int port, ModelRegistry registry, ServeOptions options, string? inferenceKey, ILoggerFactory loggerFactory, ILogger logger, CancellationToken cancellationToken)
    {
        WebApplicationBuilder builder = Hosting.LoopbackHost.CreateBuilder(loggerFactory,
            kestrel => kestrel.Listen(IPAddress.Loopback, port, listen => listen.Protocols = HttpProtocols.Http2));
        builder.Services.AddGrpc(grpc => grpc.MaxReceiveMessageSize = (int)Math.Min(int.MaxValue, options.MaxRequestSize));
        builder.Services.AddSingleton(new GrpcInference(registry, new OpenInferenceApi(registry, options, logger), inferenceKey));
        WebApplication app = builder.Build();
        app.UseRouting();
        app.MapGrpcService<GrpcInference>();
        var endpoint = new GrpcEndpoint(app);
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await endpoint.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        endpoint.Address = Hosting.LoopbackHost.BoundAddress(app);
        return endpoint;
    }

    public async Task StopAsync(CancellationToken cancellationToken) => await _app.StopAsync(cancellationToken).ConfigureAwait(false);

    public ValueTask DisposeAsync() => _app.DisposeAsync();
}
