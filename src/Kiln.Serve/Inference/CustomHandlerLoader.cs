namespace Kiln.Serve.Inference;

/// <summary>Loads a C# handler from an assembly inside the archive (not written yet).</summary>
internal static class CustomHandlerLoader
{
    /// <summary>True when the handler names an assembly (<c>NAME.dll</c> or <c>NAME.dll:Namespace.Class</c>).</summary>
    public static bool IsCustom(string handler) =>
        handler.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) || handler.Contains(".dll:", StringComparison.OrdinalIgnoreCase);

    public static IModelHandler Create(string handler, HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        throw new ServeException(400, "ModelException", $"Custom handler {handler}: C# handler assemblies are not supported yet.");
    }
}
