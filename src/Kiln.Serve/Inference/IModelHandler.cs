namespace Kiln.Serve.Inference;

/// <summary>
/// A built-in handler (TorchServe's preprocess → inference → postprocess) over a model loaded once and shared by all of
/// its worker threads. <see cref="Handle"/> is called from several worker threads at once and must be thread-safe.
/// </summary>
internal interface IModelHandler : IDisposable
{
    /// <summary>Runs one batch; returns one outcome per input, in order. Bad input fails only its own entry.</summary>
    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch);

    /// <summary>Where the handler's model runs, as TorchServe's describe output says it: <c>cpu</c> or <c>gpu</c>.</summary>
    public string DeviceType => "cpu";

    /// <summary>
    /// Optional work done on the request's own thread before it is queued (decoding, validation), so that it runs in
    /// parallel across requests instead of on the model's few workers. The result reaches <see cref="Handle"/> as
    /// <see cref="HandlerInput.Prepared"/>; a <see cref="ServeException"/> fails the request without queueing it.
    /// </summary>
    public object? Prepare(ReadOnlyMemory<byte> body, string? contentType) => null;

    /// <summary>Whether <c>/explanations</c> works: inputs then arrive with <see cref="HandlerInput.Explain"/> set.</summary>
    public bool SupportsExplanations => false;
}
