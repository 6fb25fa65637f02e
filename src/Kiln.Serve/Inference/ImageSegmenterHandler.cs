namespace Kiln.Serve.Inference;

/// <summary>TorchServe's <c>image_segmenter</c> handler (not written yet).</summary>
internal static class ImageSegmenterHandler
{
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", "Handler \"image_segmenter\" is not available yet.");
    }
}
