namespace Kiln.Serve.Inference;

/// <summary>
/// TorchServe's <c>image_segmenter</c> handler: the classifier's preprocessing (resize shorter side 256, center crop
/// 224×224 or the model's declared H×W, ImageNet normalisation); the model's output named <c>out</c> (else its first
/// output), shaped [N,C,H,W], goes through softmax over C; each image's response is the nested [H][W][2] array of
/// <c>[class_index, probability]</c> of the most probable class per pixel.
/// </summary>
internal sealed class ImageSegmenterHandler : IModelHandler
{
    private const string Name = "image_segmenter";

    private readonly ModelBackend _model;
    private readonly int _output;
    private readonly int _height;
    private readonly int _width;

    private ImageSegmenterHandler(ModelBackend model)
    {
        _model = model;
        (int? height, int? width) = ImageTransforms.DeclaredSize(model.InputDimensions, Name);
        _height = height ?? ImageTransforms.DefaultSize;
        _width = width ?? ImageTransforms.DefaultSize;
        int named = model.OutputNames.ToList().IndexOf("out");
        _output = named >= 0 ? named : 0;
        if (_output < model.OutputDimensions.Count && model.OutputDimensions[_output] is { Length: > 0 } dims && dims.Length != 4)
        {
            throw new ServeException(400, "ModelException", $"{Name} needs a model output shaped [N,C,H,W]; '{model.OutputNames[_output]}' is [{string.Join(",", dims)}].");
        }
    }

    /// <summary>Opens the archive's model.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: a model whose input is not [N,3,H,W] or whose output is not [N,C,H,W].</exception>
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Create(context, context.OpenModel());
    }

    /// <summary>Creates the handler over an opened model (any <see cref="ModelBackend"/>); disposes it on failure.</summary>
    internal static IModelHandler Create(HandlerContext context, ModelBackend model)
    {
        ArgumentNullException.ThrowIfNull(context);
        return ImageTransforms.Over(model, m => new ImageSegmenterHandler(m));
    }

    public string DeviceType => _model.DeviceType;

    /// <summary>Decodes, resizes and normalises on the request's thread; an undecodable image is a 400 before it is queued.</summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType) => ImageTransforms.ResizeCropNormalize(ImageTransforms.Decode(body.Span), _height, _width);

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch) => ImageTransforms.RunBatch(
        batch,
        image => ImageTransforms.ResizeCropNormalize(image, _height, _width),
        tensors => _model.Run(tensors),
        (_, outputs) => Write(outputs[Math.Min(_output, outputs.Length - 1)]));

    private static byte[] Write(FloatTensor scores)
    {
        long[] shape = scores.Shape;
        if (shape.Length != 4 || shape[0] != 1)
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: the segmentation output is {scores.ShapeText} per image, not [1,C,H,W].");
        }
        int classes = (int)shape[1], height = (int)shape[2], width = (int)shape[3];
        int plane = height * width;
        float[] data = scores.Data;
        return ImageTransforms.Json(writer =>
        {
            writer.WriteStartArray();
            for (int y = 0; y < height; y++)
            {
                writer.WriteStartArray();
                for (int x = 0; x < width; x++)
                {
                    int pixel = (y * width) + x;
                    // Softmax over the classes at this pixel; only the winner's probability is needed.
                    int best = 0;
                    float max = data[pixel];
                    for (int c = 1; c < classes; c++)
                    {
                        if (data[(c * plane) + pixel] > max)
                        {
                            max = data[(c * plane) + pixel];
                            best = c;
                        }
                    }
                    double sum = 0;
                    for (int c = 0; c < classes; c++)
                    {
                        sum += Math.Exp(data[(c * plane) + pixel] - max);
                    }
                    writer.WriteStartArray();
                    writer.WriteNumberValue(best);
                    writer.WriteNumberValue((float)(1 / sum));
                    writer.WriteEndArray();
                }
                writer.WriteEndArray();
            }
            writer.WriteEndArray();
        });
    }

    public void Dispose() => _model.Dispose();
}
