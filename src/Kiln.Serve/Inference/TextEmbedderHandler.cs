using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>
/// The <c>text_embedder</c> handler: text (see <see cref="TextRequest"/>) → BERT WordPiece ids (<see cref="TextTokenizer"/>,
/// default maximum 256 tokens, sentence-transformers' length for all-MiniLM-L6-v2) → the ONNX model (<see cref="TextModel"/>)
/// → a sentence embedding as a JSON array of D numbers. A token-level output <c>[N,T,D]</c> (the first float output, or
/// <c>last_hidden_state</c>) is pooled over the real tokens: <c>pooling: mean</c> (default, sentence-transformers' mean
/// over the attention mask) or <c>cls</c> (the first token); an output that is already <c>[N,D]</c> is taken as it is.
/// The vector is then L2-normalised unless model-config.yaml says <c>normalize: false</c>.
/// </summary>
internal sealed class TextEmbedderHandler : IModelHandler
{
    internal const int DefaultMaxLength = 256;

    private readonly TextModel _model;
    private readonly TextTokenizer _tokenizer;
    private readonly bool _normalize;
    private readonly bool _cls;

    private TextEmbedderHandler(TextModel model, TextTokenizer tokenizer, bool normalize, bool cls)
    {
        _model = model;
        _tokenizer = tokenizer;
        _normalize = normalize;
        _cls = cls;
    }

    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        TextTokenizer tokenizer = TextTokenizer.Create(context, "text_embedder", DefaultMaxLength);
        bool normalize = TextConfig.Bool(context, "normalize") ?? true;
        bool cls = TextConfig.String(context, "pooling", "mean", "cls") == "cls";
        TextModel model = TextModel.Open(context, "text_embedder", "last_hidden_state");
        return new TextEmbedderHandler(model, tokenizer, normalize, cls);
    }

    public string DeviceType => _model.DeviceType;

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch) =>
        TextBatch.Run(batch, _tokenizer, _model, Write);

    private byte[] Write(TextOutput output, int row)
    {
        double[] embedding = output.Shape.Length switch
        {
            2 => [.. output.Row(row).ToArray().Select(v => (double)v)],
            3 => Pool(output, row),
            _ => throw new ServeException(503, "InternalServerException", $"text_embedder reads an output shaped [N,D] or [N,T,D]; '{_model.OutputName}' is [{string.Join(",", output.Shape)}]."),
        };
        if (_normalize)
        {
            Normalize(embedding);
        }
        var buffer = new MemoryStream((embedding.Length * 12) + 2);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (double value in embedding)
            {
                writer.WriteNumberValue((float)value);
            }
            writer.WriteEndArray();
        }
        return buffer.ToArray();
    }

    /// <summary>Mean (or first-token) pooling of row <paramref name="row"/>'s real tokens.</summary>
    private double[] Pool(TextOutput output, int row)
    {
        int steps = (int)output.Shape[1];
        int width = (int)output.Shape[2];
        ReadOnlySpan<float> values = output.Row(row);
        int tokens = _cls ? 1 : Math.Clamp(output.Lengths[row], 1, steps);
        double[] sum = new double[width];
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<float> token = values.Slice(t * width, width);
            for (int d = 0; d < width; d++)
            {
                sum[d] += token[d];
            }
        }
        for (int d = 0; d < width; d++)
        {
            sum[d] /= tokens;
        }
        return sum;
    }

    /// <summary>Divides by the L2 norm (at least 1e-12, as torch.nn.functional.normalize does).</summary>
    private static void Normalize(double[] vector)
    {
        double squares = 0;
        foreach (double value in vector)
        {
            squares += value * value;
        }
        double norm = Math.Max(Math.Sqrt(squares), 1e-12);
        for (int i = 0; i < vector.Length; i++)
        {
            vector[i] /= norm;
        }
    }

    public void Dispose() => _model.Dispose();
}
