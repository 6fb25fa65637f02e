using System.Globalization;
using System.Text.Json;

namespace Kiln.Serve.Inference;

/// <summary>
/// The <c>text_classifier</c> handler: text (see <see cref="TextRequest"/>) → BERT WordPiece ids (<see cref="TextTokenizer"/>,
/// default maximum 512 tokens) → the ONNX model's logits <c>[N,C]</c> (<c>logits</c>, else the first float output) →
/// softmax → every class with its probability, in class order: <c>{"World": 0.91, "Sports": 0.03, …}</c> as TorchServe's
/// text_classifier answers. Labels come from the archive's <c>index_to_name.json</c> (TorchServe's format,
/// <c>{"0": "World", …}</c>; a list value takes its last element); classes without a label are named by their index.
/// Unlike TorchServe's handler, which reads only the first request of a batch, every request of a batch is answered.
/// </summary>
internal sealed class TextClassifierHandler : IModelHandler
{
    internal const int DefaultMaxLength = 512;
    internal const string LabelFile = IndexToName.FileName;

    private readonly TextModel _model;
    private readonly TextTokenizer _tokenizer;
    private readonly IReadOnlyDictionary<int, string> _labels;

    private TextClassifierHandler(TextModel model, TextTokenizer tokenizer, IReadOnlyDictionary<int, string> labels)
    {
        _model = model;
        _tokenizer = tokenizer;
        _labels = labels;
    }

    public static IModelHandler Create(HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        TextTokenizer tokenizer = TextTokenizer.Create(context, "text_classifier", DefaultMaxLength);
        IReadOnlyDictionary<int, string> labels = ReadLabels(context);
        TextModel model = TextModel.Open(context, "text_classifier", "logits");
        return new TextClassifierHandler(model, tokenizer, labels);
    }

    public string DeviceType => _model.DeviceType;

    public HandlerOutput[] Handle(IReadOnlyList<HandlerInput> batch) =>
        TextBatch.Run(batch, _tokenizer, _model, Write);

    private byte[] Write(TextOutput output, int row)
    {
        if (output.Shape.Length != 2)
        {
            throw new ServeException(503, "InternalServerException", $"text_classifier reads logits shaped [N,C]; '{_model.OutputName}' is [{string.Join(",", output.Shape)}].");
        }
        double[] probabilities = Softmax(output.Row(row));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            for (int c = 0; c < probabilities.Length; c++)
            {
                string name = _labels.TryGetValue(c, out string? label) ? label : c.ToString(CultureInfo.InvariantCulture);
                if (!names.Add(name))
                {
                    throw new ServeException(503, "InternalServerException", $"text_classifier: class {c} is named \"{name}\" like an earlier class; {LabelFile} must give each class its own name.");
                }
                writer.WriteNumber(name, probabilities[c]);
            }
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Softmax in double precision, shifted by the largest logit.</summary>
    internal static double[] Softmax(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float logit in logits)
        {
            max = Math.Max(max, logit);
        }
        double[] result = new double[logits.Length];
        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            result[i] = Math.Exp(logits[i] - max);
            sum += result[i];
        }
        for (int i = 0; i < result.Length; i++)
        {
            result[i] /= sum;
        }
        return result;
    }

    /// <summary>
    /// Reads <c>index_to_name.json</c> (see <see cref="IndexToName"/>): <c>{"0": "World", …}</c> or <c>{"0": ["id", "World"], …}</c>
    /// (TorchServe takes the last element) or a list <c>["World", …]</c>. Empty when the archive has none.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: not such JSON, or two classes with one name.</exception>
    private static Dictionary<int, string> ReadLabels(HandlerContext context)
    {
        Dictionary<int, string> labels = IndexToName.Read(context, NumberStyles.None, int.MaxValue, " (0, 1, …)")?
            .ToDictionary(l => (int)l.Key, l => l.Value) ?? [];
        if (labels.GroupBy(l => l.Value, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
        {
            throw new ServeException(400, "ModelException", $"{LabelFile} names classes {string.Join(" and ", duplicate.Select(l => l.Key))} both \"{duplicate.Key}\"; the response keys classes by name, so each needs its own.");
        }
        return labels;
    }

    public void Dispose() => _model.Dispose();
}
