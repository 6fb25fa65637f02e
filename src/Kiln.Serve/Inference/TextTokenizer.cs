using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace Kiln.Serve.Inference;

/// <summary>
/// BERT WordPiece tokenization (Microsoft.ML.Tokenizers' <see cref="BertTokenizer"/>) over the archive's <c>vocab.txt</c>:
/// <c>[CLS] tokens [SEP]</c>, truncated to the maximum length (special tokens included). Lower-casing and accent
/// stripping follow model-config.yaml's <c>doLowerCase</c> / <c>stripAccents</c>, else the archive's
/// <c>tokenizer_config.json</c> (<c>do_lower_case</c>, <c>strip_accents</c>), else uncased (both on). The maximum length is
/// model-config.yaml's <c>maxLength</c>, else <c>sentence_bert_config.json</c>'s <c>max_seq_length</c>, else
/// <c>tokenizer_config.json</c>'s <c>model_max_length</c>, else the handler's default. Thread-safe.
/// </summary>
internal sealed class TextTokenizer
{
    internal const string VocabFile = "vocab.txt";
    internal const string TokenizerConfigFile = "tokenizer_config.json";
    internal const string SentenceBertConfigFile = "sentence_bert_config.json";

    /// <summary>BERT's position embeddings end at 512; larger limits are only taken from model-config.yaml.</summary>
    private const int BertPositions = 512;

    private readonly BertTokenizer _tokenizer;

    private TextTokenizer(BertTokenizer tokenizer, int maxLength, bool lowerCase, bool stripAccents)
    {
        _tokenizer = tokenizer;
        MaxLength = maxLength;
        LowerCase = lowerCase;
        StripAccents = stripAccents;
    }

    /// <summary>Most tokens per input, <c>[CLS]</c> and <c>[SEP]</c> included.</summary>
    public int MaxLength { get; }

    public bool LowerCase { get; }

    public bool StripAccents { get; }

    /// <summary>The id of <c>[PAD]</c>, which fills the tail of shorter inputs in a batch.</summary>
    public int PaddingId => _tokenizer.PaddingTokenId;

    /// <summary>Loads the archive's vocabulary with its settings.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: no <c>vocab.txt</c>, a bad setting, or a vocabulary without BERT's special tokens.</exception>
    public static TextTokenizer Create(HandlerContext context, string handler, int defaultMaxLength)
    {
        string vocab = context.ExtraFile(VocabFile)
            ?? throw new ServeException(400, "ModelException", $"{handler} needs the model's WordPiece vocabulary as an extra file named {VocabFile} (kiln archive --extra-files vocab.txt).");
        bool lowerCase;
        bool stripAccents;
        int maxLength;
        using (JsonDocument? tokenizerConfig = TextConfig.JsonFile(context, TokenizerConfigFile))
        using (JsonDocument? sentenceConfig = TextConfig.JsonFile(context, SentenceBertConfigFile))
        {
            lowerCase = TextConfig.Bool(context, "doLowerCase") ?? TextConfig.JsonBool(tokenizerConfig, "do_lower_case") ?? true;
            stripAccents = TextConfig.Bool(context, "stripAccents") ?? TextConfig.JsonBool(tokenizerConfig, "strip_accents") ?? lowerCase;
            maxLength = TextConfig.Int(context, "maxLength", minimum: 2)
                ?? TextConfig.JsonInt(sentenceConfig, "max_seq_length", BertPositions)
                ?? TextConfig.JsonInt(tokenizerConfig, "model_max_length", BertPositions)
                ?? defaultMaxLength;
        }
        if (maxLength < 2)
        {
            throw new ServeException(400, "ModelException", $"{handler}: the maximum length {maxLength} leaves no room for [CLS] and [SEP].");
        }
        try
        {
            BertTokenizer tokenizer = BertTokenizer.Create(vocab, new BertOptions
            {
                LowerCaseBeforeTokenization = lowerCase,
                RemoveNonSpacingMarks = stripAccents,
            });
            return new TextTokenizer(tokenizer, maxLength, lowerCase, stripAccents);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException or IOException)
        {
            throw new ServeException(400, "ModelException", $"{handler}: {VocabFile} is not a BERT WordPiece vocabulary ({ex.Message}).", ex);
        }
    }

    /// <summary>The token ids of <paramref name="text"/>: <c>[CLS]</c>, its WordPieces, <c>[SEP]</c>, at most <see cref="MaxLength"/> in all.</summary>
    public int[] Encode(string text) =>
        [.. _tokenizer.EncodeToIds(text, MaxLength, addSpecialTokens: true, out _, out _)];
}
