using System.Buffers.Binary;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Kiln.Serve.Protocols.Grpc;

namespace Kiln.Serve.Tests;

public sealed class GrpcTests
{
    private static readonly float[] s_x = [1.5f, -2f, 0.1f, 7f, 0.3f, 0.7f, -11f, 3.25f];

    private static Metadata Auth(ServerHarness harness) =>
        harness.InferenceKey is { } key ? new Metadata { { "authorization", "Bearer " + key } } : [];

    [Fact]
    public async Task HealthMetadataAndInferMatchTheRestApi()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        float[] expected = await ServerHarness.PredictTensorAsync(harness.Inference, "predictions/lin", s_x);
        using GrpcChannel channel = GrpcChannel.ForAddress(harness.Server.GrpcAddress);
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(channel);
        Metadata auth = Auth(harness);

        (await client.ServerLiveAsync(new ServerLiveRequest(), auth)).Live.ShouldBeTrue();
        (await client.ServerReadyAsync(new ServerReadyRequest(), auth)).Ready.ShouldBeTrue();
        (await client.ModelReadyAsync(new ModelReadyRequest { Name = "lin", Version = "1.0" }, auth)).Ready.ShouldBeTrue();
        ModelMetadataResponse metadata = await client.ModelMetadataAsync(new ModelMetadataRequest { Name = "lin" }, auth);
        metadata.Versions.ShouldBe(["1.0"]);
        metadata.Platform.ShouldBe("onnxruntime_onnx");
        metadata.Inputs.Single().Name.ShouldBe("X");
        metadata.Inputs.Single().Shape.ShouldBe([-1L, TinyOnnx.Inputs]);
        metadata.Outputs.Single().Shape.ShouldBe([-1L, TinyOnnx.Outputs]);

        var request = new ModelInferRequest { ModelName = "lin", Id = "g1" };
        var input = new ModelInferRequest.Types.InferInputTensor { Name = "X", Datatype = "FP32", Contents = new InferTensorContents() };
        input.Shape.AddRange([2, TinyOnnx.Inputs]);
        input.Contents.Fp32Contents.AddRange(s_x);
        request.Inputs.Add(input);
        ModelInferResponse response = await client.ModelInferAsync(request, auth);
        response.Id.ShouldBe("g1");
        response.ModelVersion.ShouldBe("1.0");
        response.Outputs.Single().Name.ShouldBe("Y");
        response.Outputs.Single().Shape.ShouldBe([2L, TinyOnnx.Outputs]);
        response.Outputs.Single().Contents.Fp32Contents.ShouldBe(expected);

        // Raw contents in, raw contents out, byte for byte.
        byte[] raw = new byte[s_x.Length * 4];
        for (int i = 0; i < s_x.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(raw.AsSpan(i * 4), s_x[i]);
        }
        input.Contents = null;
        request.RawInputContents.Add(ByteString.CopyFrom(raw));
        ModelInferResponse rawResponse = await client.ModelInferAsync(request, auth);
        byte[] expectedRaw = new byte[expected.Length * 4];
        for (int i = 0; i < expected.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(expectedRaw.AsSpan(i * 4), expected[i]);
        }
        rawResponse.RawOutputContents.Single().ToByteArray().ShouldBe(expectedRaw);
    }

    [Fact]
    public async Task ErrorsMapToGrpcStatusCodes()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await harness.LinearArchiveAsync("lin"));
        using GrpcChannel channel = GrpcChannel.ForAddress(harness.Server.GrpcAddress);
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(channel);
        Metadata auth = Auth(harness);

        (await Should.ThrowAsync<RpcException>(async () => await client.ModelMetadataAsync(new ModelMetadataRequest { Name = "nope" }, auth))).StatusCode.ShouldBe(StatusCode.NotFound);
        (await Should.ThrowAsync<RpcException>(async () => await client.ModelReadyAsync(new ModelReadyRequest { Name = "lin", Version = "9" }, auth))).StatusCode.ShouldBe(StatusCode.NotFound);
        var request = new ModelInferRequest { ModelName = "lin" };
        var input = new ModelInferRequest.Types.InferInputTensor { Name = "X", Datatype = "FP32", Contents = new InferTensorContents() };
        input.Shape.AddRange([1, 8]);
        input.Contents.Fp32Contents.AddRange(s_x);
        request.Inputs.Add(input);
        RpcException shape = await Should.ThrowAsync<RpcException>(async () => await client.ModelInferAsync(request, auth));
        shape.StatusCode.ShouldBe(StatusCode.InvalidArgument);
        shape.Status.Detail.ShouldContain("'X'");
        input.Shape.Clear();
        input.Shape.AddRange([2, 4]);
        input.Datatype = "INT32";
        (await Should.ThrowAsync<RpcException>(async () => await client.ModelInferAsync(request, auth))).Status.Detail.ShouldContain("'X'");
        if (harness.InferenceKey is not null)
        {
            (await Should.ThrowAsync<RpcException>(async () => await client.ServerLiveAsync(new ServerLiveRequest()))).StatusCode.ShouldBe(StatusCode.Unauthenticated);
            (await Should.ThrowAsync<RpcException>(async () => await client.ServerLiveAsync(new ServerLiveRequest(), new Metadata { { "authorization", "Bearer wrong" } })))
                .StatusCode.ShouldBe(StatusCode.PermissionDenied);
        }
    }
}
