namespace Kiln.Serve.Inference;

/// <summary>TorchServe's <c>text_embedder</c> handler (not written yet).</summary>
internal static class TextEmbedderHandler
{
    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", "Handler \"text_embedder\" is not available yet.");
    }
}
