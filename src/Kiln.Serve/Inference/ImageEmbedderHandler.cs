using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>
/// The <c>image_embedder</c> handler: a JPEG/PNG/WebP/GIF/BMP body is decoded with SkiaSharp, resized (bilinear, no crop)
/// to the model's input size, laid out as planar RGB floats in 0..255, passed through the archive's preprocessing graph
/// when it has one (<c>preprocess.onnx</c>, e.g. ML.NET's ResNetPreprocess.onnx: RGB→BGR and mean subtraction) or else
/// normalised with ImageNet's mean and standard deviation, then through the model. The response is the flattened
/// first output as a JSON array (512 numbers for ResNet-18).
/// </summary>
internal sealed class ImageEmbedderHandler : IModelHandler
{
    internal const string PreprocessFile = "preprocess.onnx";

    private readonly ModelBackend _model;
    private readonly ModelBackend? _preprocess;
    private readonly int _height;
    private readonly int _width;

    /// <summary>Opens the archive's model and, when present, its <c>preprocess.onnx</c>.</summary>
    public static ImageEmbedderHandler Create(HandlerContext context)
    {
        ModelBackend? preprocess = context.ExtraFile(PreprocessFile) is { } path ? context.Backend.Open(path) : null;
        ModelBackend? model = null;
        try
        {
            model = context.OpenModel();
            return new ImageEmbedderHandler(model, preprocess);
        }
        catch
        {
            preprocess?.Dispose();
            model?.Dispose();
            throw;
        }
    }

    private ImageEmbedderHandler(ModelBackend model, ModelBackend? preprocess)
    {
        _model = model;
        _preprocess = preprocess;
        long[] dims = (preprocess ?? model).InputDimensions;
        if (dims.Length == 0)
        {
            dims = [-1, 3, -1, -1]; // undeclared (TorchScript): the model judges the shape; 224×224 by default
        }
        if (dims.Length != 4 || dims[1] is not (3 or <= 0))
        {
            throw new ServeException(400, "ModelException", $"image_embedder needs a model input shaped [N,3,H,W]; this one is [{string.Join(",", dims)}].");
        }
        _height = dims[2] > 0 ? (int)dims[2] : 224;
        _width = dims[3] > 0 ? (int)dims[3] : 224;
    }

    public string DeviceType => _model.DeviceType;

    /// <summary>Decodes and resizes on the request's thread; an undecodable image is a 400 before it is queued.</summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType) =>
        ImageTransforms.DecodeResized(body.Span, _height, _width, normalize: _preprocess is null);

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch)
    {
        var outputs = new HandlerOutput[batch.Count];
        var tensors = new List<FloatTensor>(batch.Count);
        var indices = new List<int>(batch.Count);
        for (int i = 0; i < batch.Count; i++)
        {
            try
            {
                tensors.Add(batch[i].Prepared as FloatTensor ?? ImageTransforms.DecodeResized(batch[i].Body.Span, _height, _width, normalize: _preprocess is null));
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
        IReadOnlyList<FloatTensor> inputs = tensors;
        if (_preprocess is not null)
        {
            inputs = [.. _preprocess.Run(tensors).Select(r => r[0])];
        }
        FloatTensor[][] results = _model.Run(inputs);
        for (int k = 0; k < indices.Count; k++)
        {
            outputs[indices[k]] = HandlerOutput.Ok(WriteArray(results[k][0].Data));
        }
        return outputs;
    }

    private static byte[] WriteArray(ReadOnlySpan<float> values)
    {
        var buffer = new MemoryStream((values.Length * 12) + 2);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (float value in values)
            {
                writer.WriteNumberValue(value);
            }
            writer.WriteEndArray();
        }
        return buffer.ToArray();
    }

    public void Dispose()
    {
        _model.Dispose();
        _preprocess?.Dispose();
    }
}
