namespace Kiln.Serve.Handlers;

/// <summary>
/// A custom handler written per request: <see cref="Preprocess(InferenceRequest)"/> each request,
/// <see cref="Inference(IReadOnlyList{TInput})"/> the batch, <see cref="Postprocess(TOutput, InferenceRequest)"/> each output.
/// A <see cref="HandlerException"/> thrown by a per-request step fails only that request; the rest of the batch goes on.
/// </summary>
/// <typeparam name="TInput">What one request becomes before it reaches the model.</typeparam>
/// <typeparam name="TOutput">What the model gives back for one request.</typeparam>
/// <remarks>
/// The threading contract of <see cref="IInferenceHandler"/> applies: the steps run concurrently on several worker
/// threads, each with its own batch. Override <see cref="Dispose(bool)"/> to release what <see cref="Initialize"/> opened.
/// </remarks>
public abstract class InferenceHandler<TInput, TOutput> : IInferenceHandler, IDisposable
{
    private InferenceHandlerContext? _context;

    /// <summary>The context <see cref="Initialize"/> received.</summary>
    /// <exception cref="InvalidOperationException">Read before <see cref="Initialize"/>.</exception>
    protected InferenceHandlerContext Context => _context ?? throw new InvalidOperationException($"{GetType().Name} has not been initialized yet.");

    /// <summary>Keeps the context in <see cref="Context"/>; override to load the model, calling the base method first.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    public virtual void Initialize(InferenceHandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        _context = context;
    }

    /// <summary>Reads one request; throw <see cref="HandlerException"/> to fail only this request.</summary>
    protected abstract TInput Preprocess(InferenceRequest request);

    /// <summary>Runs the model on the batch's inputs (those of the requests that did not fail).</summary>
    /// <returns>One output per input, in the same order.</returns>
    protected abstract IReadOnlyList<TOutput> Inference(IReadOnlyList<TInput> inputs);

    /// <summary>Writes the response of one request; throw <see cref="HandlerException"/> to fail only this request.</summary>
    protected abstract InferenceResponse Postprocess(TOutput output, InferenceRequest request);

    object? IInferenceHandler.Preprocess(IReadOnlyList<InferenceRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(requests);
        var items = new List<Item>(requests.Count);
        foreach (InferenceRequest request in requests)
        {
            if (request.IsFailed)
            {
                continue;
            }
            try
            {
                items.Add(new Item(request, Preprocess(request)));
            }
            catch (HandlerException ex)
            {
                request.Fail(ex);
            }
        }
        return items;
    }

    object? IInferenceHandler.Inference(object? input)
    {
        var items = (List<Item>)input!;
        if (items.Count == 0)
        {
            return new Batch(items, []);
        }
        IReadOnlyList<TOutput> outputs = Inference([.. items.Select(item => item.Input)]);
        if (outputs is null || outputs.Count != items.Count)
        {
            throw new InvalidOperationException($"{GetType().Name}.Inference returned {outputs?.Count ?? 0} outputs for {items.Count} inputs.");
        }
        return new Batch(items, outputs);
    }

    IReadOnlyList<InferenceResponse> IInferenceHandler.Postprocess(object? output, IReadOnlyList<InferenceRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(requests);
        var batch = (Batch)output!;
        var responses = new InferenceResponse[requests.Count];
        for (int k = 0; k < batch.Items.Count; k++)
        {
            InferenceRequest request = batch.Items[k].Request;
            try
            {
                responses[request.Index] = Postprocess(batch.Outputs[k], request);
            }
            catch (HandlerException ex)
            {
                responses[request.Index] = InferenceResponse.Failure(ex);
            }
        }
        foreach (InferenceRequest request in requests)
        {
            if (request.Error is { } error)
            {
                responses[request.Index] = InferenceResponse.Failure(error);
            }
        }
        return responses;
    }

    /// <summary>Releases what the handler holds; the server calls it once, after the model version's last batch.</summary>
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the handler's resources (sessions, files) when <paramref name="disposing"/> is true.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    private readonly record struct Item(InferenceRequest Request, TInput Input);

    private sealed record Batch(List<Item> Items, IReadOnlyList<TOutput> Outputs);
}
