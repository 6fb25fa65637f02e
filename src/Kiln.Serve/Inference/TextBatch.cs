namespace Kiln.Serve.Inference;

/// <summary>The shared body of the text handlers: read and tokenize each request, run the good ones as one batch, write each result.</summary>
internal static class TextBatch
{
    /// <summary>
    /// Runs one batch: a request without usable text fails alone (400); the others run as one padded session call and
    /// are written by <paramref name="write"/> from their row of the output.
    /// </summary>
    public static HandlerOutput[] Run(IReadOnlyList<HandlerInput> batch, TextTokenizer tokenizer, TextModel model, Func<TextOutput, int, byte[]> write)
    {
        var outputs = new HandlerOutput[batch.Count];
        var tokens = new List<int[]>(batch.Count);
        var indices = new List<int>(batch.Count);
        for (int i = 0; i < batch.Count; i++)
        {
            try
            {
                tokens.Add(tokenizer.Encode(TextRequest.Read(batch[i].Body, batch[i].ContentType)));
                indices.Add(i);
            }
            catch (ServeException ex)
            {
                outputs[i] = HandlerOutput.Failed(ex);
            }
        }
        if (tokens.Count == 0)
        {
            return outputs;
        }
        TextOutput result = model.Run(tokens, tokenizer.PaddingId);
        for (int k = 0; k < indices.Count; k++)
        {
            outputs[indices[k]] = HandlerOutput.Ok(write(result, k));
        }
        return outputs;
    }
}
