using Microsoft.ML.Tokenizers;

namespace Kiln.Data;

/// <summary>UTF-8 text to token ids through Microsoft.ML.Tokenizers.</summary>
internal static partial class BuiltInNodes
{
    static partial void RegisterText(NodeRegistry r)
    {
        r.AddNodeType("tokenize", c =>
        {
            string model = c.Parameters.Choice("model", "gpt2", "gpt2");
            int maxLength = c.Parameters.Int("max_length", 0, min: 0);
            if (One(c) is not { } input)
            {
                return null;
            }
            if (input.ItemType != typeof(string))
            {
                c.Error($"tokenize reads text (strings), but '{input.Id}' yields {NodeBuildContext.Pretty(input.ItemType)}");
                return null;
            }
            if (c.Parameters.Failed)
            {
                return null;
            }
            // The tokenizer is immutable and thread-safe; its vocabulary ships in a NuGet package (no download).
            Tokenizer tokenizer = TiktokenTokenizer.CreateForModel(model);
            Func<string, int[]> encode = text =>
            {
                IReadOnlyList<int> ids = maxLength > 0 ? tokenizer.EncodeToIds(text, maxLength, out _, out _) : tokenizer.EncodeToIds(text);
                return [.. ids];
            };
            return c.Make(typeof(Nodes.MapNode<,>), [typeof(string), typeof(int[])], c.Spec.Id, input, encode, c.Spec.Parameters, "tokenize");
        });
        r.AddKey<int[]>("tokens.length", static t => t.Length);
    }
}
