namespace Kiln.Serve.Inference;

/// <summary>The built-in handlers by TorchServe's names, and custom C# handlers shipped inside the archive.</summary>
internal static class HandlerCatalog
{
    /// <summary>The names <c>--handler</c> accepts besides a custom handler assembly.</summary>
    public static IReadOnlyList<string> BuiltIn { get; } =
        ["tensor", "image_classifier", "image_segmenter", "object_detector", "image_embedder", "text_classifier", "text_embedder"];

    /// <summary>Creates the named handler, loading its model once.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: unknown handler, or a model the handler cannot run.</exception>
    public static IModelHandler Create(string handler, HandlerContext context) => handler switch
    {
        "tensor" => new TensorHandler(context.OpenModel()),
        "image_embedder" => ImageEmbedderHandler.Create(context),
        "image_classifier" => ImageClassifierHandler.Create(context),
        "image_segmenter" => ImageSegmenterHandler.Create(context),
        "object_detector" => ObjectDetectorHandler.Create(context),
        "text_classifier" => TextClassifierHandler.Create(context),
        "text_embedder" => TextEmbedderHandler.Create(context),
        _ when CustomHandlerLoader.IsCustom(handler) => CustomHandlerLoader.Create(handler, context),
        _ => throw new ServeException(400, "ModelException", $"Handler \"{handler}\" is not built in ({string.Join(", ", BuiltIn)}) and is not a C# handler assembly in the archive (NAME.dll or NAME.dll:Namespace.Class)."),
    };
}
