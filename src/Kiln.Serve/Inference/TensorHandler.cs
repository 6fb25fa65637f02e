namespace Kiln.Serve.Inference;

/// <summary>
/// The <c>tensor</c> handler: a float32 tensor in (JSON <c>{"data":[…],"shape":[…]}</c> or a <c>.npy</c> body), the
/// model's outputs out as JSON: <c>{"data":[…],"shape":[…]}</c> for one output, <c>{"name":{"data","shape"},…}</c> for several.
/// </summary>
internal sealed class TensorHandler(ModelBackend model) : IModelHandler
{
    /// <summary>The model the handler runs (for protocol metadata).</summary>
    private Func<object, byte[]>? _render;

    public ModelBackend Model => model;

    public string DeviceType => model.DeviceType;

    /// <summary>Decodes and checks the tensor on the request's thread; a bad body is a 400 before it is queued.</summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType)
    {
        FloatTensor tensor = TensorCodec.Read(body.Span, contentType);
        model.Validate(tensor);
        return tensor;
    }

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch)
    {
        var outputs = new HandlerOutput[batch.Count];
        var tensors = new List<FloatTensor>(batch.Count);
        var indices = new List<int>(batch.Count);
        for (int i = 0; i < batch.Count; i++)
        {
            try
            {
                if (batch[i].Prepared is not FloatTensor tensor)
                {
                    tensor = TensorCodec.Read(batch[i].Body.Span, batch[i].ContentType);
                    model.Validate(tensor);
                }
                tensors.Add(tensor);
                indices.Add(i);
            }
            catch (ServeException ex)
            {
                outputs[i] = HandlerOutput.Failed(ex);
            }
        }
        if (tensors.Count == 0)
        {
            return outputs;
        }
        (FloatTensor[]? Outputs, ServeException? Error)[] results = model.RunEach(tensors);
        for (int k = 0; k < indices.Count; k++)
        {
            outputs[indices[k]] = results[k].Outputs is { } tensorsOut
                ? HandlerOutput.Later(new DeferredResponse(tensorsOut, _render ??= tensors => Write((FloatTensor[])tensors)))
                : HandlerOutput.Failed(results[k].Error!);
        }
        return outputs;
    }

    private byte[] Write(FloatTensor[] results)
    {
        if (results.Length == 1)
        {
            return TensorCodec.WriteJson(results[0].Data, results[0].Shape);
        }
        var buffer = new MemoryStream();
        using (var writer = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            for (int i = 0; i < results.Length; i++)
            {
                writer.WriteStartObject(model.OutputNames[i]);
                TensorCodec.WriteTensorBody(writer, results[i].Data, results[i].Shape);
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    public void Dispose() => model.Dispose();
}
