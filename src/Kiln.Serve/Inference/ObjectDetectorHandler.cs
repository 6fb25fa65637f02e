namespace Kiln.Serve.Inference;

/// <summary>TorchServe's <c>object_detector</c> handler (not written yet).</summary>
internal static class ObjectDetectorHandler
{
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", "Handler \"object_detector\" is not available yet.");
    }
}
