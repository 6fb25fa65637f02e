namespace Kiln.Serve.Inference;

/// <summary>TorchServe's <c>image_classifier</c> handler (not written yet).</summary>
internal static class ImageClassifierHandler
{
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", "Handler \"image_classifier\" is not available yet.");
    }
}
