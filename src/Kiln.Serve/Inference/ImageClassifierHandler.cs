namespace Kiln.Serve.Inference;

/// <summary>
/// TorchServe's <c>image_classifier</c> handler: each image is decoded, resized (shorter side 256) and center-cropped
/// to 224×224 (or the model's declared H×W), normalised with ImageNet's mean and standard deviation and run through
/// the model; the first output's logits go through softmax (always, as TorchServe does, unless model-config.yaml says
/// <c>softmax: false</c>) and the top-k classes (<c>topk</c>, default 5, at most the number of classes) come back as
/// one JSON object label → probability in descending order. Labels come from the archive's <c>index_to_name.json</c>,
/// else they are the class indices.
/// </summary>
internal sealed class ImageClassifierHandler : IModelHandler
{
    private const string Name = "image_classifier";

    private readonly ModelBackend _model;
    private readonly IReadOnlyDictionary<long, string>? _labels;
    private readonly int _height;
    private readonly int _width;
    private readonly int _topK;
    private readonly bool _softmax;

    private ImageClassifierHandler(ModelBackend model, HandlerContext context)
    {
        _model = model;
        (int? height, int? width) = ImageTransforms.DeclaredSize(model.InputDimensions, Name);
        _height = height ?? ImageTransforms.DefaultSize;
        _width = width ?? ImageTransforms.DefaultSize;
        _labels = ImageTransforms.ReadLabels(context);
        _topK = ImageTransforms.ConfigInt(context, "topk", 5, minimum: 1);
        _softmax = ImageTransforms.ConfigBool(context, "softmax", true);
    }

    /// <summary>Opens the archive's model and reads its labels and handler settings.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: a model that is not [N,3,H,W], bad labels or config.</exception>
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Create(context, context.OpenModel());
    }

    /// <summary>Creates the handler over an opened model (any <see cref="ModelBackend"/>); disposes it on failure.</summary>
    internal static IModelHandler Create(HandlerContext context, ModelBackend model)
    {
        ArgumentNullException.ThrowIfNull(context);
        return ImageTransforms.Over(model, m => new ImageClassifierHandler(m, context));
    }

    public string DeviceType => _model.DeviceType;

    /// <summary>Decodes, resizes and normalises on the request's thread; an undecodable image is a 400 before it is queued.</summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType) => ImageTransforms.ResizeCropNormalize(ImageTransforms.Decode(body.Span), _height, _width);

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch) => ImageTransforms.RunBatch(
        batch,
        image => ImageTransforms.ResizeCropNormalize(image, _height, _width),
        tensors => _model.Run(tensors),
        (_, outputs) => Write(outputs[0].Data));

    private byte[] Write(float[] logits)
    {
        float[] probabilities = _softmax ? ImageTransforms.Softmax(logits) : logits;
        int k = Math.Min(_topK, probabilities.Length);
        // Descending probability; ties keep the lower class index first (a stable order, as torch.topk gives on CPU).
        int[] order = [.. Enumerable.Range(0, probabilities.Length).OrderByDescending(i => probabilities[i]).ThenBy(i => i).Take(k)];
        return ImageTransforms.Json(writer =>
        {
            writer.WriteStartObject();
            var written = new HashSet<string>(StringComparer.Ordinal);
            foreach (int index in order)
            {
                string label = ImageTransforms.LabelOf(_labels, index);
                if (written.Add(label)) // two classes with one label: the more probable one stands (a JSON object has one value per key)
                {
                    writer.WriteNumber(label, probabilities[index]);
                }
            }
            writer.WriteEndObject();
        });
    }

    public void Dispose() => _model.Dispose();
}
