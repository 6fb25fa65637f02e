using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Kiln.Serve.Archives;

namespace Kiln.Serve.Tests;

/// <summary>text_classifier and text_embedder over the hand-written models of <see cref="TextOnnx"/>, against their arithmetic.</summary>
public sealed class TextHandlerTests
{
    private const string Labels = """{"0": "World", "1": "Sports", "2": "Business", "3": "Sci/Tec"}""";
    private static readonly string[] s_labelNames = ["World", "Sports", "Business", "Sci/Tec"];

    [Fact]
    public async Task TextClassifier_AnswersEveryClassWithItsSoftmaxProbability_ByLabel()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "news", "text_classifier", TextOnnx.Classifier(), labels: Labels));

        JsonElement plain = await PredictAsync(harness, "predictions/news", new StringContent("The cat sat.", Encoding.UTF8, "text/plain"));

        plain.EnumerateObject().Select(p => p.Name).ShouldBe(s_labelNames);
        ShouldBeProbabilities(plain, Ids("[CLS]", "the", "cat", "sat", ".", "[SEP]"));
        // JSON forms of the same text, and a body without a content type, give the same answer.
        JsonElement json = await PredictAsync(harness, "predictions/news", JsonContent.Create(new { text = "The cat sat." }));
        JsonElement jsonString = await PredictAsync(harness, "predictions/news", new StringContent("\"The cat sat.\"", Encoding.UTF8, "application/json"));
        JsonElement raw = await PredictAsync(harness, "predictions/news", new ByteArrayContent(Encoding.UTF8.GetBytes("The cat sat.")));
        foreach (JsonElement other in (JsonElement[])[json, jsonString, raw])
        {
            other.GetRawText().ShouldBe(plain.GetRawText());
        }
        // Word pieces and unknown words.
        ShouldBeProbabilities(await PredictAsync(harness, "predictions/news", new StringContent("Dogs RAN, zebra!")),
            Ids("[CLS]", "dog", "##s", "ran", "[UNK]", "[UNK]", "!", "[SEP]"));
    }

    [Fact]
    public async Task TextClassifier_BatchedConcurrentRequests_EachGetsItsOwnAnswer_AndEmptyTextIs400Alone()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "news", "text_classifier", TextOnnx.Classifier(), labels: Labels), "initial_workers=1&batch_size=8&max_batch_delay=300");
        (string Text, int[] Ids)[] cases =
        [
            ("the cat", Ids("[CLS]", "the", "cat", "[SEP]")),
            ("good movie!", Ids("[CLS]", "good", "movie", "!", "[SEP]")),
            ("stock market games", Ids("[CLS]", "stock", "market", "game", "##s", "[SEP]")),
            ("bad", Ids("[CLS]", "bad", "[SEP]")),
            ("the dog ran. the cat sat. good game!", Ids("[CLS]", "the", "dog", "ran", ".", "the", "cat", "sat", ".", "good", "game", "!", "[SEP]")),
            ("dogs", Ids("[CLS]", "dog", "##s", "[SEP]")),
        ];

        Task<HttpResponseMessage>[] requests = [.. cases.Select(c => harness.Inference.PostAsync("predictions/news", new StringContent(c.Text))),
            harness.Inference.PostAsync("predictions/news", new StringContent("")),
            harness.Inference.PostAsync("predictions/news", new StringContent("  \n\t"))];
        HttpResponseMessage[] responses = await Task.WhenAll(requests);

        for (int i = 0; i < cases.Length; i++)
        {
            string body = await responses[i].Content.ReadAsStringAsync();
            responses[i].StatusCode.ShouldBe(HttpStatusCode.OK, body);
            using JsonDocument document = JsonDocument.Parse(body);
            ShouldBeProbabilities(document.RootElement, cases[i].Ids);
        }
        JsonElement error = await ServerHarness.ShouldBeErrorAsync(responses[^2], 400, "BadRequestException");
        error.GetProperty("message").GetString()!.ShouldContain("no text");
        await ServerHarness.ShouldBeErrorAsync(responses[^1], 400, "BadRequestException");
        foreach (HttpResponseMessage response in responses)
        {
            response.Dispose();
        }
    }

    [Fact]
    public async Task TextClassifier_WithoutLabels_KeysByIndex_AndConfigTruncatesAndKeepsCase()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "plain", "text_classifier", TextOnnx.Classifier()));
        await harness.RegisterAsync(await ArchiveAsync(harness, "short", "text_classifier", TextOnnx.Classifier(), modelConfig: "maxLength: 4\ndoLowerCase: false\n"));

        JsonElement plain = await PredictAsync(harness, "predictions/plain", new StringContent("the cat sat"));
        plain.EnumerateObject().Select(p => p.Name).ShouldBe(["0", "1", "2", "3"]);
        ShouldBeProbabilities(plain, Ids("[CLS]", "the", "cat", "sat", "[SEP]"));

        // Cased: "The" is not in the lower-case vocabulary; four tokens in all, [CLS] and [SEP] included.
        ShouldBeProbabilities(await PredictAsync(harness, "predictions/short", new StringContent("The cat sat")), Ids("[CLS]", "[UNK]", "cat", "[SEP]"));
    }

    [Fact]
    public async Task TextEmbedder_MeanPoolsTokenEmbeddingsOverTheMask_AndNormalises_PerConfig()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "emb", "text_embedder", TextOnnx.Encoder()), "initial_workers=1&batch_size=4&max_batch_delay=200");
        await harness.RegisterAsync(await ArchiveAsync(harness, "raw", "text_embedder", TextOnnx.Encoder(), modelConfig: "normalize: false\n"));
        await harness.RegisterAsync(await ArchiveAsync(harness, "cls", "text_embedder", TextOnnx.Encoder(), modelConfig: "pooling: cls\n"));
        string[] texts = ["the cat sat", "good movie", "dogs ran!", "stock"];

        float[][] batched = await Task.WhenAll(texts.Select(t => EmbedAsync(harness, "predictions/emb", t)));

        int[][] ids = [Ids("[CLS]", "the", "cat", "sat", "[SEP]"), Ids("[CLS]", "good", "movie", "[SEP]"), Ids("[CLS]", "dog", "##s", "ran", "!", "[SEP]"), Ids("[CLS]", "stock", "[SEP]")];
        for (int i = 0; i < texts.Length; i++)
        {
            double[] mean = Mean(ids[i]);
            batched[i].ShouldBe(Normalised(mean), 1e-6f);
        }
        (await EmbedAsync(harness, "predictions/raw", texts[0])).ShouldBe([.. Mean(ids[0]).Select(v => (float)v)], 1e-6f);
        (await EmbedAsync(harness, "predictions/cls", texts[0])).ShouldBe(Normalised(Mean(Ids("[CLS]"))), 1e-6f);
    }

    [Fact]
    public async Task TextHandlers_RefuseArchivesTheyCannotRun_With400ModelException()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();

        // No vocab.txt.
        string noVocab = await ArchiveAsync(harness, "novocab", "text_embedder", TextOnnx.Encoder(), vocab: false);
        JsonElement error = await RegisterErrorAsync(harness, noVocab);
        error.GetProperty("message").GetString()!.ShouldContain("vocab.txt");
        // A float-input model is not a text model.
        string floatInput = await ArchiveAsync(harness, "floaty", "text_classifier", TinyOnnx.Linear(1f));
        (await RegisterErrorAsync(harness, floatInput)).GetProperty("message").GetString()!.ShouldContain("int64");
        // Bad settings.
        string badConfig = await ArchiveAsync(harness, "badcfg", "text_embedder", TextOnnx.Encoder(), modelConfig: "pooling: max\n");
        (await RegisterErrorAsync(harness, badConfig)).GetProperty("message").GetString()!.ShouldContain("pooling");
        string duplicateLabels = await ArchiveAsync(harness, "dup", "text_classifier", TextOnnx.Classifier(), labels: """{"0": "A", "1": "A"}""");
        (await RegisterErrorAsync(harness, duplicateLabels)).GetProperty("message").GetString()!.ShouldContain("index_to_name.json");
    }

    /// <summary>Writes a .mar of <paramref name="model"/> with the tiny vocabulary (and labels, model-config.yaml) into the store.</summary>
    internal static async Task<string> ArchiveAsync(ServerHarness harness, string name, string handler, byte[] model, string? labels = null, string? modelConfig = null, bool vocab = true)
    {
        string folder = Path.Combine(harness.Store, "src-" + name);
        Directory.CreateDirectory(folder);
        string modelPath = Path.Combine(folder, "model.onnx");
        await File.WriteAllBytesAsync(modelPath, model);
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", "model.onnx", handler) { ConfigFile = modelConfig is null ? null : "model-config.yaml" });
        builder.AddFile(modelPath);
        async Task AddAsync(string file, string text)
        {
            string path = Path.Combine(folder, file);
            await File.WriteAllTextAsync(path, text);
            builder.AddFile(path);
        }
        if (vocab)
        {
            await AddAsync("vocab.txt", string.Join('\n', TextOnnx.Vocab) + "\n");
        }
        if (labels is not null)
        {
            await AddAsync("index_to_name.json", labels);
        }
        if (modelConfig is not null)
        {
            await AddAsync("model-config.yaml", modelConfig);
        }
        string mar = name + ".mar";
        await builder.WriteAsync(Path.Combine(harness.Store, mar));
        return mar;
    }

    private static async Task<JsonElement> RegisterErrorAsync(ServerHarness harness, string mar)
    {
        using HttpResponseMessage response = await harness.Management.PostAsync($"models?url={mar}&synchronous=true&initial_workers=1", null);
        return await ServerHarness.ShouldBeErrorAsync(response, 400, "ModelException");
    }

    private static async Task<JsonElement> PredictAsync(ServerHarness harness, string path, HttpContent content)
    {
        using (content)
        {
            using HttpResponseMessage response = await harness.Inference.PostAsync(path, content);
            string body = await response.Content.ReadAsStringAsync();
            response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
            using JsonDocument document = JsonDocument.Parse(body);
            return document.RootElement.Clone();
        }
    }

    private static async Task<float[]> EmbedAsync(ServerHarness harness, string path, string text)
    {
        JsonElement result = await PredictAsync(harness, path, new StringContent(text));
        return [.. result.EnumerateArray().Select(v => v.GetSingle())];
    }

    private static void ShouldBeProbabilities(JsonElement answer, int[] ids)
    {
        double[] expected = TextOnnx.Softmax(TextOnnx.Logits(ids));
        double[] actual = [.. answer.EnumerateObject().Select(p => p.Value.GetDouble())];
        actual.Length.ShouldBe(TextOnnx.Classes);
        for (int c = 0; c < expected.Length; c++)
        {
            actual[c].ShouldBe(expected[c], 1e-6, $"class {c} of {answer.GetRawText()}");
        }
        actual.Sum().ShouldBe(1.0, 1e-9);
    }

    private static int[] Ids(params string[] tokens) => [.. tokens.Select(TextOnnx.Id)];

    private static double[] Mean(int[] ids)
    {
        double[] mean = new double[TextOnnx.Width];
        foreach (int id in ids)
        {
            float[] e = TextOnnx.Embedding(id);
            for (int d = 0; d < mean.Length; d++)
            {
                mean[d] += e[d] / (double)ids.Length;
            }
        }
        return mean;
    }

    private static float[] Normalised(double[] vector)
    {
        double norm = Math.Sqrt(vector.Sum(v => v * v));
        return [.. vector.Select(v => (float)(v / norm))];
    }
}
