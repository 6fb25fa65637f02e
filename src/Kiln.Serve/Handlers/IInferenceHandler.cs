namespace Kiln.Serve.Handlers;

/// <summary>
/// A custom handler written in C# and shipped inside the model archive: Kiln's counterpart of TorchServe's custom Python
/// handler (<c>initialize</c>, <c>preprocess</c>, <c>inference</c>, <c>postprocess</c>). Name its assembly as the
/// archive's handler (<c>MyHandler.dll</c>, or <c>MyHandler.dll:My.Namespace.MyHandler</c> when it holds several).
/// </summary>
/// <remarks>
/// <para>
/// The server creates one instance per model version with the type's public parameterless constructor, calls
/// <see cref="Initialize"/> once, then runs every batch through <see cref="Preprocess"/> → <see cref="Inference"/> →
/// <see cref="Postprocess"/> on the worker thread that took it. <b>Threading:</b> the model version's worker threads
/// share the instance and call these three methods concurrently, each with its own batch; keep per-batch state in
/// locals and the object the steps pass on, and make shared state (sessions, caches) thread-safe.
/// <c>InferenceSession.Run</c> of ONNX Runtime is thread-safe.
/// </para>
/// <para>
/// <b>Errors:</b> fail one request with <see cref="InferenceRequest.Fail"/> or an
/// <see cref="InferenceResponse.Failure(HandlerException)"/> entry; a <see cref="HandlerException"/> thrown from a step
/// fails the whole batch with its status code; any other exception fails the whole batch with 503
/// <c>InternalServerException</c>. An exception from the constructor or <see cref="Initialize"/> makes the
/// registration a 400 <c>ModelException</c>.
/// </para>
/// <para>
/// <b>Lifetime:</b> when the model version is unregistered, after its last batch, the server disposes the instance if it
/// implements <see cref="IDisposable"/> (dispose sessions there), then unloads the handler's assembly load context.
/// </para>
/// <para><see cref="InferenceHandler{TInput, TOutput}"/> implements this interface per request and is usually shorter.</para>
/// </remarks>
public interface IInferenceHandler
{
    /// <summary>Loads what the handler needs (the model, vocabularies, settings); called once, before any batch.</summary>
    /// <param name="context">The archive, its manifest and settings, a logger and a way to open the model.</param>
    public void Initialize(InferenceHandlerContext context);

    /// <summary>Turns a batch of requests into the model's input.</summary>
    /// <param name="requests">The batch (one or more requests, at most the model's batch size), in arrival order.</param>
    /// <returns>Whatever <see cref="Inference"/> takes.</returns>
    public object? Preprocess(IReadOnlyList<InferenceRequest> requests);

    /// <summary>Runs the model on what <see cref="Preprocess"/> returned.</summary>
    /// <returns>Whatever <see cref="Postprocess"/> takes.</returns>
    public object? Inference(object? input);

    /// <summary>Turns the model's output into one response per request.</summary>
    /// <param name="output">What <see cref="Inference"/> returned.</param>
    /// <param name="requests">The same batch <see cref="Preprocess"/> got.</param>
    /// <returns>
    /// Exactly <c>requests.Count</c> responses, in request order (any other count fails the batch with 503). The entry of a
    /// request failed with <see cref="InferenceRequest.Fail"/> is ignored: that request gets its recorded error.
    /// </returns>
    public IReadOnlyList<InferenceResponse> Postprocess(object? output, IReadOnlyList<InferenceRequest> requests);
}
