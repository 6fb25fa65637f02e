namespace Kiln.Serve.Inference;

/// <summary>TorchServe's <c>text_classifier</c> handler (not written yet).</summary>
internal static class TextClassifierHandler
{
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", "Handler \"text_classifier\" is not available yet.");
    }
}
