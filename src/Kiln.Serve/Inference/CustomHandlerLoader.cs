using System.Reflection;
using Kiln.Serve.Handlers;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Inference;

/// <summary>
/// Loads a C# handler (<see cref="IInferenceHandler"/>) from an assembly inside the extracted archive, in a collectible
/// <see cref="HandlerLoadContext"/> of its own that is unloaded with the model version.
/// </summary>
internal static partial class CustomHandlerLoader
{
    /// <summary>True when the handler names an assembly (<c>NAME.dll</c> or <c>NAME.dll:Namespace.Class</c>).</summary>
    public static bool IsCustom(string handler) =>
        handler.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) || handler.Contains(".dll:", StringComparison.OrdinalIgnoreCase);

    /// <summary>Whether <paramref name="name"/> is a plain file name: no folder, no <c>..</c>, no drive or stream colon.</summary>
    internal static bool IsPlainFileName(string name) =>
        name.Length > 0 && name is not "." and not ".." && Path.GetFileName(name) == name
        && name.IndexOfAny(['/', '\\', ':', '\0']) < 0;

    /// <summary>
    /// Loads the handler assembly from the archive folder, finds the handler type (the named one, or the single public
    /// non-abstract <see cref="IInferenceHandler"/>), creates it and calls <see cref="IInferenceHandler.Initialize"/>.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c> naming the assembly: bad name, missing file, no or several
    /// handler types, or a constructor or <c>Initialize</c> that threw (its message included).</exception>
    public static IModelHandler Create(string handler, HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(context);
        int colon = handler.IndexOf(".dll:", StringComparison.OrdinalIgnoreCase);
        string assemblyFile = colon < 0 ? handler : handler[..(colon + 4)];
        string? typeName = colon < 0 ? null : handler[(colon + 5)..];
        string archiveName = $"{context.Archive.Manifest.ModelName} {context.Archive.Manifest.ModelVersion}";
        if (!IsPlainFileName(assemblyFile) || typeName is { Length: 0 })
        {
            throw Error($"Handler \"{handler}\" must be an assembly file name at the top of the archive, NAME.dll or NAME.dll:Namespace.Class, without folders or '..'.");
        }
        string path = Path.Combine(context.Archive.Folder, assemblyFile);
        if (!File.Exists(path))
        {
            throw Error($"Handler assembly {assemblyFile} is not in the archive of model {archiveName}; add it with --extra-files (kiln archive --handler {assemblyFile} --extra-files path/to/{assemblyFile}).");
        }
        var loadContext = new HandlerLoadContext($"kiln-handler:{context.Archive.Manifest.ModelName}:{context.Archive.Manifest.ModelVersion}:{Guid.NewGuid():N}", path);
        IInferenceHandler? instance = null;
        try
        {
            Assembly assembly;
            try
            {
                assembly = loadContext.LoadFromAssemblyPath(path);
            }
            catch (BadImageFormatException ex)
            {
                throw Error($"Handler assembly {assemblyFile} is not a .NET assembly: {ex.Message}", ex);
            }
            Type type = FindType(assembly, assemblyFile, typeName);
            try
            {
                instance = (IInferenceHandler)Activator.CreateInstance(type)!;
            }
            catch (TargetInvocationException ex) when (ex.InnerException is { } inner)
            {
                throw Error($"Handler {type.FullName} in {assemblyFile}: the constructor threw {inner.GetType().Name}: {inner.Message}", inner);
            }
            catch (MissingMethodException ex)
            {
                throw Error($"Handler {type.FullName} in {assemblyFile} has no public parameterless constructor.", ex);
            }
            var handlerContext = new InferenceHandlerContext(context, context.Logger);
            try
            {
                instance.Initialize(handlerContext);
            }
#pragma warning disable CA1031 // any failure of the handler's code makes the registration a 400 naming it
            catch (Exception ex)
#pragma warning restore CA1031
            {
                throw Error($"Handler {type.FullName} in {assemblyFile}: Initialize threw {ex.GetType().Name}: {ex.Message}", ex);
            }
            Log.Loaded(context.Logger, context.Archive.Manifest.ModelName, context.Archive.Manifest.ModelVersion, type.FullName, assemblyFile);
            return new CustomModelHandler(instance, type.FullName ?? type.Name, loadContext, handlerContext);
        }
        catch
        {
            CustomModelHandler.Release(instance, loadContext, context.Logger);
            throw;
        }
    }

    private static Type FindType(Assembly assembly, string assemblyFile, string? typeName)
    {
        Type[] types;
        try
        {
            types = assembly.GetExportedTypes();
        }
        catch (Exception ex) when (ex is ReflectionTypeLoadException or FileNotFoundException or FileLoadException or TypeLoadException)
        {
            throw Error($"Handler assembly {assemblyFile} cannot be loaded: {ex.Message} Ship its dependencies in the archive (--extra-files), with its .deps.json.", ex);
        }
        Type[] candidates = [.. types.Where(t => t.IsClass && !t.IsAbstract && !t.ContainsGenericParameters && typeof(IInferenceHandler).IsAssignableFrom(t))];
        string listed = candidates.Length == 0 ? "none" : string.Join(", ", candidates.Select(t => t.FullName));
        if (typeName is not null)
        {
            Type? named = assembly.GetType(typeName, throwOnError: false);
            if (named is null || !named.IsPublic && !named.IsNestedPublic)
            {
                throw Error($"Handler assembly {assemblyFile} has no public type {typeName}. Types implementing {nameof(IInferenceHandler)}: {listed}.");
            }
            if (!candidates.Contains(named))
            {
                throw Error($"Type {typeName} in {assemblyFile} is not a non-abstract class implementing {typeof(IInferenceHandler).FullName}. Types implementing it: {listed}.");
            }
            return named;
        }
        return candidates.Length switch
        {
            1 => candidates[0],
            0 => throw Error($"Handler assembly {assemblyFile} has no public non-abstract class implementing {typeof(IInferenceHandler).FullName} (built against this server's Kiln.Serve?)."),
            _ => throw Error($"Handler assembly {assemblyFile} has {candidates.Length} classes implementing {nameof(IInferenceHandler)} ({listed}); name one as {assemblyFile}:Namespace.Class."),
        };
    }

    private static ServeException Error(string message, Exception? inner = null) =>
        inner is null ? new ServeException(400, "ModelException", message) : new ServeException(400, "ModelException", message, inner);

    /// <summary>
    /// A loaded custom handler as the workers see it: turns a batch into <see cref="InferenceRequest"/>s, runs the three
    /// steps and maps the responses and failures to outcomes. Disposing disposes the handler and unloads its context.
    /// </summary>
    private sealed class CustomModelHandler(IInferenceHandler handler, string typeName, HandlerLoadContext loadContext, InferenceHandlerContext context) : IModelHandler
    {
        private IInferenceHandler? _handler = handler;
        private HandlerLoadContext? _loadContext = loadContext;
        private InferenceHandlerContext? _context = context;

        public string DeviceType => _context?.UsesGpu == true ? "gpu" : "cpu";

        public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch)
        {
            IInferenceHandler instance = Volatile.Read(ref _handler) ?? throw new ObjectDisposedException(typeName);
            var requests = new InferenceRequest[batch.Count];
            for (int i = 0; i < requests.Length; i++)
            {
                requests[i] = new InferenceRequest(i, batch[i].Body, batch[i].ContentType);
            }
            IReadOnlyList<InferenceResponse> responses;
            try
            {
                object? input = instance.Preprocess(requests);
                object? output = instance.Inference(input);
                responses = instance.Postprocess(output, requests);
            }
            catch (HandlerException ex)
            {
                throw ex.ToServeException();
            }
            catch (Exception ex) when (ex is not ServeException)
            {
                throw new ServeException(503, "InternalServerException", "Prediction failed", ex);
            }
            if (responses is null || responses.Count != requests.Length)
            {
                throw new ServeException(503, "InternalServerException", $"Invalid model predict output: handler {typeName} returned {responses?.Count ?? 0} responses for a batch of {requests.Length}.");
            }
            var outputs = new HandlerOutput[requests.Length];
            for (int i = 0; i < outputs.Length; i++)
            {
                InferenceResponse? response = responses[i];
                outputs[i] = requests[i].Error is { } failed ? HandlerOutput.Failed(failed.ToServeException())
                    : response is null ? HandlerOutput.Failed(new ServeException(503, "InternalServerException", $"Invalid model predict output: handler {typeName} returned no response for request {i} of its batch."))
                    : response.Error is { } error ? HandlerOutput.Failed(error.ToServeException())
                    : HandlerOutput.Ok(response.Body.ToArray(), response.ContentType);
            }
            return outputs;
        }

        public void Dispose()
        {
            IInferenceHandler? instance = Interlocked.Exchange(ref _handler, null);
            HandlerLoadContext? unload = Interlocked.Exchange(ref _loadContext, null);
            ILogger? logger = _context?.Logger;
            _context = null;
            if (unload is not null)
            {
                Release(instance, unload, logger);
            }
        }

        /// <summary>Disposes the handler (if it is disposable) and unloads its context; a failing Dispose is logged, not thrown.</summary>
        public static void Release(IInferenceHandler? instance, HandlerLoadContext loadContext, ILogger? logger)
        {
            try
            {
                (instance as IDisposable)?.Dispose();
            }
#pragma warning disable CA1031 // unloading goes on whatever the handler's Dispose does
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.DisposeFailed(logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, ex, instance?.GetType().FullName);
            }
            loadContext.Unload();
        }
    }

    /// <summary>Custom handler events, 25x of Kiln.Serve's 2xx model range (next id: 252).</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 250, Level = LogLevel.Information, Message = "Model {Model} version {Version}: custom handler {Handler} loaded from {Assembly} in its own load context")]
        public static partial void Loaded(ILogger logger, string model, string version, string? handler, string assembly);

        [LoggerMessage(EventId = 251, Level = LogLevel.Warning, Message = "Custom handler {Handler} threw from Dispose; its load context is unloaded anyway")]
        public static partial void DisposeFailed(ILogger logger, Exception exception, string? handler);
    }
}
