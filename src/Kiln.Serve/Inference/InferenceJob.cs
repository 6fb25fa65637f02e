using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Inference;

/// <summary>One request waiting in a model's queue: its body, and the completion its HTTP call awaits.</summary>
internal sealed class InferenceJob
{
    // The outcome: response bytes, or a DeferredResponse that the caller's thread renders.
    private readonly TaskCompletionSource<object> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public InferenceJob(ReadOnlyMemory<byte> body, string? contentType, bool explain = false, object? prepared = null)
    {
        Prepared = prepared;
        Body = body;
        ContentType = contentType;
        Explain = explain;
        EnqueuedAt = Stopwatch.GetTimestamp();
    }

    public ReadOnlyMemory<byte> Body { get; }

    public string? ContentType { get; }

    /// <summary>What the handler's <see cref="IModelHandler.Prepare"/> made of the body on the request's thread, if anything.</summary>
    public object? Prepared { get; }

    /// <summary>True for <c>/explanations</c>: the handler explains instead of predicting.</summary>
    public bool Explain { get; }

    public long EnqueuedAt { get; }

    /// <summary>True once the job has an outcome (e.g. its caller timed out and gave up).</summary>
    public bool IsDone => _completion.Task.IsCompleted;

    /// <summary>The media type of the successful response; null means <c>application/json</c> (custom handlers set others).</summary>
    public string? ResponseContentType { get; private set; }

    public void Succeed(byte[] json, string? contentType = null)
    {
        ResponseContentType = contentType;
        _completion.TrySetResult(json);
    }

    /// <summary>Completes the job with a result that the waiting caller turns into bytes on its own thread.</summary>
    public void SucceedLater(DeferredResponse response) => _completion.TrySetResult(response);

    public void Fail(Exception error) => _completion.TrySetException(error);

    /// <summary>
    /// Awaits the outcome for the caller, within the model's response timeout: on timeout or cancellation the job
    /// is failed (a worker that has not taken it yet skips it) and the caller gets TorchServe's 500, or the cancellation.
    /// </summary>
    public async Task<byte[]> WaitAsync(ModelVersionHost host, ILogger logger, CancellationToken cancellationToken)
    {
        object outcome = await WaitResultAsync(host, logger, cancellationToken).ConfigureAwait(false);
        byte[] body = outcome as byte[] ?? ((DeferredResponse)outcome).Render();
        if (body.Length > host.Settings.MaxResponseSize)
        {
            throw new ServeException(413, "ResponseTooLargeException",
                $"The response of model \"{host.Name}\" version {host.Version} is {body.Length} bytes, over max_response_size ({host.Settings.MaxResponseSize} bytes); raise max_response_size in the server configuration to allow it.");
        }
        return body;
    }

    /// <summary>
    /// Like <see cref="WaitAsync"/> but returns the outcome as the handler left it: response bytes, or a
    /// <see cref="DeferredResponse"/> whose <see cref="DeferredResponse.Payload"/> a protocol may use without rendering.
    /// </summary>
    public async Task<object> WaitResultAsync(ModelVersionHost host, ILogger logger, CancellationToken cancellationToken)
    {
        int seconds = host.Settings.ResponseTimeoutSeconds;
        try
        {
            return await _completion.Task.WaitAsync(TimeSpan.FromSeconds(seconds), cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            ServeLog.ResponseTimeout(logger, host.Name, host.Version, seconds);
            Fail(ex);
            throw new ServeException(500, "InternalServerException", $"Worker did not respond within response_timeout ({seconds} s).", ex);
        }
        catch (OperationCanceledException)
        {
            Fail(new OperationCanceledException(cancellationToken));
            throw;
        }
    }

}

/// <summary>One input of a batch as a handler sees it; <paramref name="Explain"/> asks for an explanation instead of a prediction.</summary>
internal readonly record struct HandlerInput(ReadOnlyMemory<byte> Body, string? ContentType, bool Explain = false, object? Prepared = null);

/// <summary>The outcome for one input: JSON bytes (or, from a custom handler, bytes of <see cref="ContentType"/>) or an error.</summary>
internal readonly record struct HandlerOutput(byte[]? Json, ServeException? Error)
{
    /// <summary>The response's media type; null means <c>application/json</c>.</summary>
    public string? ContentType { get; init; }

    public static HandlerOutput Ok(byte[] json) => new(json, null);

    public static HandlerOutput Ok(byte[] body, string contentType) => new(body, null) { ContentType = contentType };

    /// <summary>A result rendered to bytes later, on the waiting request's thread (keeps serialization off the workers).</summary>
    public DeferredResponse? Deferred { get; init; }

    public static HandlerOutput Later(DeferredResponse response) => new(null, null) { Deferred = response };

    public static HandlerOutput Failed(ServeException error) => new(null, error);
}

/// <summary>A handler's result for one request and how to turn it into the JSON response.</summary>
internal sealed class DeferredResponse(object payload, Func<object, byte[]> render)
{
    /// <summary>The result as the handler produced it (e.g. the output tensors).</summary>
    public object Payload => payload;

    public byte[] Render() => render(payload);
}
