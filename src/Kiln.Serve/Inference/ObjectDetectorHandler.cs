namespace Kiln.Serve.Inference;

/// <summary>
/// TorchServe's <c>object_detector</c> handler: each image is only converted to a tensor (<c>ToTensor</c>: planar RGB
/// in 0..1, its own size; resized only when the model declares a fixed height/width, and then the boxes are scaled
/// back to the image's pixels). The model (a torchvision-style detector, input [3,H,W] or [N,3,H,W]) answers boxes
/// [K,4] (x1,y1,x2,y2), labels [K] (int64 in torchvision exports) and scores [K]; detections scoring at least the
/// threshold (<c>threshold</c> in model-config.yaml, default 0.5) come back, in the model's order, as
/// <c>[{"label":[x1,y1,x2,y2],"score":s},…]</c> with labels from <c>index_to_name.json</c> (else the class index).
/// </summary>
internal sealed class ObjectDetectorHandler : IModelHandler
{
    private const string Name = "object_detector";

    private readonly ModelBackend _model;
    private readonly IReadOnlyDictionary<long, string>? _labels;
    private readonly float _threshold;
    private readonly bool _rank3;
    private readonly int? _height;
    private readonly int? _width;
    private readonly int _boxes;
    private readonly int _classes;
    private readonly int _scores;

    private ObjectDetectorHandler(ModelBackend model, HandlerContext context)
    {
        _model = model;
        (_height, _width) = ImageTransforms.DeclaredSize(model.InputDimensions, Name, allowRank3: true);
        _rank3 = model.InputDimensions.Length == 3;
        _labels = ImageTransforms.ReadLabels(context);
        _threshold = ImageTransforms.ConfigFloat(context, "threshold", 0.5f, 0f, 1f);
        // A format that declares no shapes (TorchScript) names its outputs only after the first forward: positional then.
        (_boxes, _classes, _scores) = model.InputDimensions.Length == 0 && model.OutputNames.Count < 3 ? (0, 1, 2) : FindOutputs(model.OutputNames);
    }

    /// <summary>Opens the archive's model and reads its labels and threshold.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: a model without boxes/labels/scores outputs, bad labels or config.</exception>
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Create(context, context.OpenModel());
    }

    /// <summary>Creates the handler over an opened model (any <see cref="ModelBackend"/>); disposes it on failure.</summary>
    internal static IModelHandler Create(HandlerContext context, ModelBackend model)
    {
        ArgumentNullException.ThrowIfNull(context);
        return ImageTransforms.Over(model, m => new ObjectDetectorHandler(m, context));
    }

    public string DeviceType => _model.DeviceType;

    /// <summary>
    /// The outputs by name (<c>boxes</c>, <c>labels</c>, <c>scores</c>, exactly or as parts of the names, any case),
    /// else the first three in torchvision's order: boxes, labels, scores.
    /// </summary>
    private static (int Boxes, int Labels, int Scores) FindOutputs(IReadOnlyList<string> names)
    {
        int Find(params string[] parts)
        {
            foreach (string part in parts)
            {
                for (int i = 0; i < names.Count; i++)
                {
                    if (names[i].Equals(part, StringComparison.OrdinalIgnoreCase))
                    {
                        return i;
                    }
                }
            }
            foreach (string part in parts)
            {
                for (int i = 0; i < names.Count; i++)
                {
                    if (names[i].Contains(part, StringComparison.OrdinalIgnoreCase))
                    {
                        return i;
                    }
                }
            }
            return -1;
        }
        int boxes = Find("boxes", "box"), labels = Find("labels", "label", "classes", "class"), scores = Find("scores", "score");
        if (boxes >= 0 && labels >= 0 && scores >= 0 && boxes != labels && labels != scores && boxes != scores)
        {
            return (boxes, labels, scores);
        }
        if (names.Count >= 3)
        {
            return (0, 1, 2);
        }
        throw new ServeException(400, "ModelException", $"{Name} needs a model with boxes, labels and scores outputs (float32 or int64/int32 labels); this one has {string.Join(", ", names)}.");
    }

    /// <summary>Decodes on the request's thread; an undecodable image is a 400 before it is queued.</summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType) => Prepare(ImageTransforms.Decode(body.Span));

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch) => ImageTransforms.RunBatch(
        batch,
        Prepare,
        // One image at a time: detections per image differ in count, so outputs cannot be split from a stacked run.
        items => [.. items.Select(item => _model.Run([item.Tensor])[0])],
        Write);

    private Item Prepare(DecodedImage image)
    {
        FloatTensor tensor = ImageTransforms.ToTensor(image, _height, _width);
        if (_rank3)
        {
            tensor = tensor with { Shape = tensor.Shape[1..] };
        }
        _model.Validate(tensor);
        float scaleX = _width is { } w ? (float)image.Width / w : 1f;
        float scaleY = _height is { } h ? (float)image.Height / h : 1f;
        return new Item(tensor, scaleX, scaleY);
    }

    private byte[] Write(Item item, FloatTensor[] outputs)
    {
        if (outputs.Length <= Math.Max(_boxes, Math.Max(_classes, _scores)))
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: the detector returned {outputs.Length} outputs; boxes, labels and scores are needed.");
        }
        float[] boxes = outputs[_boxes].Data, labels = outputs[_classes].Data, scores = outputs[_scores].Data;
        if (boxes.Length != 4 * scores.Length || labels.Length != scores.Length)
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: the detector answered {boxes.Length / 4.0} boxes, {labels.Length} labels and {scores.Length} scores for one image.");
        }
        return ImageTransforms.Json(writer =>
        {
            writer.WriteStartArray();
            for (int k = 0; k < scores.Length; k++)
            {
                if (!(scores[k] >= _threshold))
                {
                    continue;
                }
                writer.WriteStartObject();
                writer.WriteStartArray(ImageTransforms.LabelOf(_labels, (long)labels[k]));
                writer.WriteNumberValue(boxes[4 * k] * item.ScaleX);
                writer.WriteNumberValue(boxes[(4 * k) + 1] * item.ScaleY);
                writer.WriteNumberValue(boxes[(4 * k) + 2] * item.ScaleX);
                writer.WriteNumberValue(boxes[(4 * k) + 3] * item.ScaleY);
                writer.WriteEndArray();
                writer.WriteNumber("score", scores[k]);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        });
    }

    public void Dispose() => _model.Dispose();

    private sealed record Item(FloatTensor Tensor, float ScaleX, float ScaleY);
}
