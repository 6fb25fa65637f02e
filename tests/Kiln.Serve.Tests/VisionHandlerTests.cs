using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Kiln.Serve.Archives;
using Kiln.Serve.Inference;
using SkiaSharp;

namespace Kiln.Serve.Tests;

/// <summary>
/// TorchServe's vision handlers over HTTP against tiny ONNX models whose outputs are linear in the (normalised) pixel
/// values, with the expected labels, order and probabilities computed here from the pictures' known colours.
/// </summary>
public sealed class VisionHandlerTests
{
    private const string Batched = "initial_workers=1&batch_size=4&max_batch_delay=200";
    private static readonly double[] s_mean = [0.485, 0.456, 0.406];
    private static readonly double[] s_std = [0.229, 0.224, 0.225];

    // ---------------------------------------------------------------- image_classifier

    [Fact]
    public async Task Classifier_TopFiveOfSoftmax_LabelsFromIndexToName_BadImageFailsAloneInItsBatch()
    {
        const int Classes = 7;
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // Labels for some classes only: the others answer their index, as text.
        string labels = """{"0": "tench", "1": "goldfish", "2": "great_white_shark", "4": "hammerhead", "6": "stingray"}""";
        await harness.RegisterAsync(await ArchiveAsync(harness, "cls", "image_classifier", Classifier(Classes), labels: labels), Batched);
        var names = new Dictionary<int, string> { [0] = "tench", [1] = "goldfish", [2] = "great_white_shark", [4] = "hammerhead", [6] = "stingray" };

        (byte R, byte G, byte B)[] colours = [(250, 10, 10), (20, 200, 90), (30, 60, 240)];
        // Non-square pictures (resize keeps the aspect), plus one with a border the center crop must cut away.
        byte[][] bodies =
        [
            Png(300, 200, (_, _) => colours[0]),
            [0x89, 0x50, 0x4E, 0x47, 1, 2, 3],
            Png(180, 320, (_, _) => colours[1]),
            // 512×384 → 341×256, crop at (58, 16): in source pixels (×1.5) the filter reads from row 23 and column 86 on.
            Png(512, 384, (x, y) => x < 20 || y < 20 || x >= 492 || y >= 364 ? ((byte)255, (byte)255, (byte)255) : colours[2]),
        ];

        HttpResponseMessage[] responses = await Task.WhenAll(bodies.Select(b => harness.Inference.PostAsync("predictions/cls", new ByteArrayContent(b))));

        (await ServerHarness.ShouldBeErrorAsync(responses[1], 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("not a decodable image");
        foreach ((int response, int colour) in new[] { (0, 0), (2, 1), (3, 2) })
        {
            List<(string Label, double P)> expected = ExpectedTopK(Logits(colours[colour], Classes), 5, i => names.TryGetValue(i, out string? n) ? n : i.ToString(CultureInfo.InvariantCulture));
            await ShouldBeClassesAsync(responses[response], expected);
        }
        foreach (HttpResponseMessage response in responses)
        {
            response.Dispose();
        }
    }

    [Fact]
    public async Task Classifier_FewerClassesThanFive_ListLabels_TopkConfig_IndexLabels_AndBase64Body()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // TorchServe's other label format: {"0": ["n01440764", "tench"], …}: the last element is the label.
        string listLabels = """{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"], "2": ["n01484850", "great_white_shark"]}""";
        await harness.RegisterAsync(await ArchiveAsync(harness, "three", "image_classifier", Classifier(3), labels: listLabels));
        await harness.RegisterAsync(await ArchiveAsync(harness, "plain", "image_classifier", Classifier(6), config: "topk: 2\n"));
        await harness.RegisterAsync(await ArchiveAsync(harness, "listed", "image_classifier", Classifier(3), labels: """["cat", "dog", "bird"]"""));
        (byte R, byte G, byte B) colour = (120, 40, 200);
        byte[] png = Png(64, 48, (_, _) => colour);

        using HttpResponseMessage three = await harness.Inference.PostAsync("predictions/three", new ByteArrayContent(png));
        string[] names3 = ["tench", "goldfish", "great_white_shark"];
        await ShouldBeClassesAsync(three, ExpectedTopK(Logits(colour, 3), 5, i => names3[i]));

        using HttpResponseMessage plain = await harness.Inference.PostAsync("predictions/plain", new ByteArrayContent(png));
        await ShouldBeClassesAsync(plain, ExpectedTopK(Logits(colour, 6), 2, i => i.ToString(CultureInfo.InvariantCulture)));

        // A base64 text body, as TorchServe's vision handlers also accept.
        using HttpResponseMessage listed = await harness.Inference.PostAsync("predictions/listed", new StringContent(Convert.ToBase64String(png), Encoding.ASCII, "text/plain"));
        string[] animals = ["cat", "dog", "bird"];
        await ShouldBeClassesAsync(listed, ExpectedTopK(Logits(colour, 3), 5, i => animals[i]));

        // A 54-byte BMP header announcing 20000×20000 pixels is refused before anything is decoded.
        using HttpResponseMessage bomb = await harness.Inference.PostAsync("predictions/listed", new ByteArrayContent(BmpHeader(20000, 20000)));
        (await ServerHarness.ShouldBeErrorAsync(bomb, 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("20000×20000 pixels");

        // 10000×2 would be resized to 1,280,000×256: refused instead.
        using HttpResponseMessage sliver = await harness.Inference.PostAsync("predictions/listed", new ByteArrayContent(Png(10000, 2, (_, _) => colour)));
        (await ServerHarness.ShouldBeErrorAsync(sliver, 400, "BadRequestException")).GetProperty("message").GetString()!.ShouldContain("longer side");
    }

    private static byte[] BmpHeader(int width, int height)
    {
        byte[] header = new byte[54];
        "BM"u8.CopyTo(header);
        BitConverter.GetBytes((int)Math.Min(int.MaxValue, 54 + (3L * width * height))).CopyTo(header, 2); // file size
        BitConverter.GetBytes(54).CopyTo(header, 10);     // pixel data offset
        BitConverter.GetBytes(40).CopyTo(header, 14);     // BITMAPINFOHEADER
        BitConverter.GetBytes(width).CopyTo(header, 18);
        BitConverter.GetBytes(height).CopyTo(header, 22);
        BitConverter.GetBytes((short)1).CopyTo(header, 26);  // planes
        BitConverter.GetBytes((short)24).CopyTo(header, 28); // bits per pixel
        return header;
    }

    [Fact]
    public async Task Classifier_SoftmaxFalse_PassesTheModelsProbabilities_AndDeclaredSizeIsCropped()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        // The model declares 32×32 and ends in Softmax; softmax: false keeps its probabilities as they are.
        await harness.RegisterAsync(await ArchiveAsync(harness, "probs", "image_classifier", Classifier(4, height: 32, width: 32, softmax: true), config: "softmax: false\ntopk: 3\n"));
        (byte R, byte G, byte B) colour = (10, 240, 130);
        // Resize to shorter side round(32·256/224) = 37 (→ 37×74 here), crop 32×32 at (21, 2): the 40-px frame of
        // another colour at the left and right is cut away (in source pixels the crop starts at x ≈ 42).
        byte[] png = Png(74 * 2, 37 * 2, (x, _) => x < 40 || x >= 108 ? ((byte)0, (byte)0, (byte)0) : colour);

        using HttpResponseMessage response = await harness.Inference.PostAsync("predictions/probs", new ByteArrayContent(png));

        await ShouldBeClassesAsync(response, ExpectedTopK(Logits(colour, 4), 3, i => i.ToString(CultureInfo.InvariantCulture)));
    }

    // ---------------------------------------------------------------- image_segmenter

    [Fact]
    public async Task Segmenter_ClassAndProbabilityPerPixel_FromTheOutputNamedOut_AfterCenterCrop()
    {
        const int Classes = 4;
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "seg", "image_segmenter", Segmenter(Classes, 14, 14)), Batched);
        await harness.RegisterAsync(await ArchiveAsync(harness, "seg224", "image_segmenter", Segmenter(Classes, null, null)));
        (byte R, byte G, byte B) left = (250, 20, 20), right = (10, 30, 250);
        // 16×16 → resized to 16 (unchanged), cropped to 14×14 at (1, 1): crop column x shows source column x + 1.
        byte[] png = Png(16, 16, (x, _) => x < 8 ? left : right);
        (int Class, double P) a = ExpectedPixel(SegmenterLogits(left, Classes)), b = ExpectedPixel(SegmenterLogits(right, Classes));
        a.Class.ShouldNotBe(b.Class);

        HttpResponseMessage[] responses = await Task.WhenAll(
            new byte[][] { png, [1, 2, 3], png }.Select(body => harness.Inference.PostAsync("predictions/seg", new ByteArrayContent(body))));

        await ServerHarness.ShouldBeErrorAsync(responses[1], 400, "BadRequestException");
        foreach (HttpResponseMessage response in new[] { responses[0], responses[2] })
        {
            string body = await response.Content.ReadAsStringAsync();
            response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
            using JsonDocument json = JsonDocument.Parse(body);
            json.RootElement.GetArrayLength().ShouldBe(14);
            for (int y = 0; y < 14; y++)
            {
                JsonElement row = json.RootElement[y];
                row.GetArrayLength().ShouldBe(14);
                for (int x = 0; x < 14; x++)
                {
                    (int Class, double P) expected = x + 1 < 8 ? a : b;
                    JsonElement pixel = row[x];
                    pixel.GetArrayLength().ShouldBe(2);
                    pixel[0].GetInt32().ShouldBe(expected.Class, $"pixel ({x},{y})");
                    pixel[1].GetDouble().ShouldBe(expected.P, 1e-5, $"pixel ({x},{y})");
                }
            }
        }
        foreach (HttpResponseMessage response in responses)
        {
            response.Dispose();
        }

        // Symbolic H and W: TorchServe's 224×224.
        using HttpResponseMessage big = await harness.Inference.PostAsync("predictions/seg224", new ByteArrayContent(Png(300, 260, (_, _) => right)));
        string text = await big.Content.ReadAsStringAsync();
        big.StatusCode.ShouldBe(HttpStatusCode.OK, text);
        using JsonDocument full = JsonDocument.Parse(text);
        full.RootElement.GetArrayLength().ShouldBe(224);
        full.RootElement.EnumerateArray().ShouldAllBe(r => r.GetArrayLength() == 224);
        full.RootElement[223][223][0].GetInt32().ShouldBe(b.Class);
        full.RootElement[0][0][1].GetDouble().ShouldBe(b.P, 1e-5);
    }

    // ---------------------------------------------------------------- object_detector

    [Fact]
    public async Task Detector_ThresholdFiltersScores_LabelsMappedFromInt64_BoxesAsTheModelSaysThem()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        string labels = """{"0": "__background__", "1": "person", "3": "car"}""";
        await harness.RegisterAsync(await ArchiveAsync(harness, "det", "object_detector", Detector(fixedSize: false), labels: labels), Batched);
        // The same labels in the older {"object_type_names": […]} form; class 18 is past its end.
        string typeNames = """{"object_type_names": ["__background__", "person", "bicycle", "car"]}""";
        await harness.RegisterAsync(await ArchiveAsync(harness, "det3", "object_detector", Detector(fixedSize: false), labels: typeNames, config: "threshold: 0.3\n"));
        // Scores are the channel means in 0..1 (ToTensor, no resize): 1.0, 100/255 = 0.392, 128/255 = 0.502.
        byte[] png = Png(40, 30, (_, _) => ((byte)255, (byte)100, (byte)128));

        HttpResponseMessage[] responses = await Task.WhenAll(
            new[] { png, Encoding.UTF8.GetBytes("not an image"), png }.Select(body => harness.Inference.PostAsync("predictions/det", new ByteArrayContent(body))));

        await ServerHarness.ShouldBeErrorAsync(responses[1], 400, "BadRequestException");
        foreach (HttpResponseMessage response in new[] { responses[0], responses[2] })
        {
            await ShouldBeDetectionsAsync(response, [("person", s_boxes[0], 1.0), ("car", s_boxes[2], 128 / 255.0)]);
        }
        foreach (HttpResponseMessage response in responses)
        {
            response.Dispose();
        }

        // threshold: 0.3 keeps the second detection too; its label 18 is not in index_to_name.json, so it is "18".
        using HttpResponseMessage all = await harness.Inference.PostAsync("predictions/det3", new ByteArrayContent(png));
        await ShouldBeDetectionsAsync(all, [("person", s_boxes[0], 1.0), ("18", s_boxes[1], 100 / 255.0), ("car", s_boxes[2], 128 / 255.0)]);
    }

    [Fact]
    public async Task Detector_FixedInputSize_ResizesAndScalesBoxesBack_OutputsFoundByName_AndTensorHandlerSeesInt64AsFloat()
    {
        await using ServerHarness harness = await ServerHarness.StartAsync();
        await harness.RegisterAsync(await ArchiveAsync(harness, "fixed", "object_detector", Detector(fixedSize: true)));
        // 16 wide, 32 high, resized to the declared 8×8: boxes come back ×2 in x and ×4 in y.
        using HttpResponseMessage response = await harness.Inference.PostAsync("predictions/fixed", new ByteArrayContent(Png(16, 32, (_, _) => ((byte)200, (byte)220, (byte)10))));
        static double[] Scaled(double[] box) => [box[0] * 2, box[1] * 4, box[2] * 2, box[3] * 4];
        await ShouldBeDetectionsAsync(response, [("1", Scaled(s_boxes[0]), 200 / 255.0), ("18", Scaled(s_boxes[1]), 220 / 255.0)]);

        // The same kind of model through the tensor handler: the int64 labels come back as numbers, the floats unchanged.
        await harness.RegisterAsync(await ArchiveAsync(harness, "raw", "tensor", Detector(fixedSize: false)));
        float[] pixels = [.. Enumerable.Range(0, 12).Select(i => i / 12f)];
        using HttpResponseMessage tensor = await harness.Inference.PostAsync("predictions/raw", new StringContent(JsonSerializer.Serialize(new { data = pixels, shape = new[] { 3, 2, 2 } }), Encoding.UTF8, "application/json"));
        string body = await tensor.Content.ReadAsStringAsync();
        tensor.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        json.RootElement.GetProperty("labels").GetProperty("data").EnumerateArray().Select(v => v.GetDouble()).ShouldBe([1.0, 18.0, 3.0]);
        json.RootElement.GetProperty("labels").GetProperty("shape").EnumerateArray().Select(v => v.GetInt64()).ShouldBe([3L]);
        json.RootElement.GetProperty("boxes").GetProperty("data").EnumerateArray().Select(v => v.GetDouble()).ShouldBe(s_boxes.SelectMany(b => b), 1e-6);
        json.RootElement.GetProperty("scores").GetProperty("data").EnumerateArray().Select(v => v.GetDouble()).ShouldBe([1.5 / 12, 5.5 / 12, 9.5 / 12], 1e-6);
    }

    // ---------------------------------------------------------------- a backend that declares no shapes (as TorchScript)

    [Fact]
    public async Task UndeclaredShapes_ClassifierGets224Crops_DetectorGetsTheImageAsOneBatchItem_OutputsByPosition()
    {
        string root = Path.Combine(Path.GetTempPath(), "kiln-vision-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(root);
        try
        {
            (byte R, byte G, byte B) colour = (90, 180, 30);
            byte[] png = Png(320, 240, (_, _) => colour);

            // Classifier: the fake model computes the same logits as the ONNX one, from the channel means it is given.
            using var classifierModel = new UndeclaredBackend(input =>
            {
                double[] means = ChannelMeans(input);
                return [new FloatTensor([.. Enumerable.Range(0, 6).Select(j => (float)(Enumerable.Range(0, 3).Sum(c => means[c] * ClassifierWeight(c, j)) + ClassifierBias(j)))], [1, 6])];
            });
            using (IModelHandler classifier = ImageClassifierHandler.Create(await ContextAsync(root, "image_classifier", labels: null), classifierModel))
            {
                HandlerOutput[] outputs = classifier.Handle([new HandlerInput(png, "image/png"), new HandlerInput(new byte[] { 1, 2 }, null)]);
                outputs[1].Error!.StatusCode.ShouldBe(400);
                using JsonDocument json = JsonDocument.Parse(outputs[0].Json!);
                List<(string Label, double P)> expected = ExpectedTopK(Logits(colour, 6), 5, i => i.ToString(CultureInfo.InvariantCulture));
                json.RootElement.EnumerateObject().Select(p => p.Name).ShouldBe(expected.Select(e => e.Label));
                json.RootElement.EnumerateObject().Select(p => p.Value.GetDouble()).ShouldBe(expected.Select(e => e.P), 1e-4);
            }
            classifierModel.Shapes.ShouldBe([[1L, 3, 224, 224]]);

            // Detector: [1,3,H,W] at the image's own size; three unnamed outputs read as boxes, labels, scores.
            using var detectorModel = new UndeclaredBackend(input =>
            {
                double[] means = ChannelMeans(input); // ToTensor: 0..1
                return [new FloatTensor([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 4]), new FloatTensor([3, 1], [1, 2]), new FloatTensor([(float)means[0], (float)means[1]], [1, 2])];
            });
            using (IModelHandler detector = ObjectDetectorHandler.Create(await ContextAsync(root, "object_detector", """{"1": "person", "3": "car"}"""), detectorModel))
            {
                HandlerOutput[] outputs = detector.Handle([new HandlerInput(png, "image/png")]);
                using JsonDocument json = JsonDocument.Parse(outputs[0].Json!);
                // Scores 90/255 = 0.35 (dropped) and 180/255 = 0.71 (kept).
                json.RootElement.GetArrayLength().ShouldBe(1);
                json.RootElement[0].GetProperty("person").EnumerateArray().Select(v => v.GetDouble()).ShouldBe([5.0, 6, 7, 8]);
                json.RootElement[0].GetProperty("score").GetDouble().ShouldBe(180 / 255.0, 1e-5);
            }
            detectorModel.Shapes.ShouldBe([[1L, 3, 240, 320]]);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static double[] ChannelMeans(FloatTensor input)
    {
        int plane = input.Data.Length / 3;
        return [.. Enumerable.Range(0, 3).Select(c => input.Data.AsSpan(c * plane, plane).ToArray().Average(v => (double)v))];
    }

    private static async Task<HandlerContext> ContextAsync(string root, string handler, string? labels)
    {
        string folder = Path.Combine(root, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        string model = Path.Combine(folder, "model.pt");
        await File.WriteAllBytesAsync(model, [0]);
        var builder = new ModelArchiveBuilder(new ModelManifest("fake", "1.0", "model.pt", handler));
        builder.AddFile(model);
        if (labels is not null)
        {
            string path = Path.Combine(folder, "index_to_name.json");
            await File.WriteAllTextAsync(path, labels);
            builder.AddFile(path);
        }
        string mar = Path.Combine(folder, "fake.mar");
        await builder.WriteAsync(mar);
        return new HandlerContext(ModelArchive.Extract(mar, Path.Combine(root, "extracted"), 1 << 20), new ModelSettings(), new BackendOptions());
    }

    /// <summary>A model backend that, like TorchScript, declares no input shape and names its outputs only after running.</summary>
    private sealed class UndeclaredBackend(Func<FloatTensor, FloatTensor[]> forward) : ModelBackend
    {
        public List<long[]> Shapes { get; } = [];

        public override string Platform => "fake";

        public override string InputName => "input__0";

        public override long[] InputDimensions => [];

        public override IReadOnlyList<string> OutputNames => ["output__0"];

        public override IReadOnlyList<long[]> OutputDimensions => [[-1]];

        protected override FloatTensor[] RunOne(FloatTensor input)
        {
            lock (Shapes)
            {
                Shapes.Add(input.Shape);
            }
            return forward(input);
        }

        protected override void Dispose(bool disposing)
        {
        }
    }

    // ---------------------------------------------------------------- the models

    private static float ClassifierWeight(int channel, int cls) => (float)Math.Round(Math.Sin(1.3 + (2.1 * channel) + (0.9 * cls * (channel + 1))) * 0.6, 3);

    private static float ClassifierBias(int cls) => (float)Math.Round(Math.Cos(0.7 * cls) * 0.5, 3);

    /// <summary>logits[N,C] = GlobalAveragePool(x)·W + B (optionally softmaxed): linear in the normalised channel means.</summary>
    private static byte[] Classifier(int classes, int? height = null, int? width = null, bool softmax = false)
    {
        float[] w = [.. Enumerable.Range(0, 3 * classes).Select(i => ClassifierWeight(i / classes, i % classes))];
        float[] b = [.. Enumerable.Range(0, classes).Select(ClassifierBias)];
        VisionOnnx model = new VisionOnnx()
            .Node("GlobalAveragePool", ["input"], ["pooled"])
            .Node("Flatten", ["pooled"], ["flat"], ("axis", 1))
            .Node("MatMul", ["flat", "W"], ["xw"])
            .Node("Add", ["xw", "B"], [softmax ? "logits" : "output"])
            .FloatInit("W", [3, classes], w)
            .FloatInit("B", [classes], b)
            .Input("input", "N", 3, height is { } h ? h : "H", width is { } v ? v : "W")
            .Output("output", "N", classes);
        if (softmax)
        {
            model.Node("Softmax", ["logits"], ["output"], ("axis", 1));
        }
        return model.Build();
    }

    private static float SegmenterWeight(int cls, int channel) => ((((cls * 5) + (channel * 3)) % 7) - 3) / 2f;

    /// <summary>out[N,C,H,W] = 1×1 Conv of the normalised pixels; a second output "aux" comes first to check the choice of "out".</summary>
    private static byte[] Segmenter(int classes, int? height, int? width)
    {
        float[] w = [.. Enumerable.Range(0, classes * 3).Select(i => SegmenterWeight(i / 3, i % 3))];
        float[] b = [.. Enumerable.Range(0, classes).Select(c => c / 4f)];
        object h = height is { } hh ? hh : "H", wd = width is { } ww ? ww : "W";
        return new VisionOnnx()
            .Node("Identity", ["input"], ["aux"])
            .Node("Conv", ["input", "Wc", "Bc"], ["out"], ("kernel_shape", new[] { 1, 1 }))
            .FloatInit("Wc", [classes, 3, 1, 1], w)
            .FloatInit("Bc", [classes], b)
            .Input("input", "N", 3, h, wd)
            .Output("aux", "N", 3, h, wd)
            .Output("out", "N", classes, h, wd)
            .Build();
    }

    private static readonly double[][] s_boxes = [[1.5, 2, 10.25, 20], [0, 0, 4, 4], [3, 5, 7, 6.5]];

    /// <summary>
    /// A torchvision-like detector: boxes [3,4] and int64 labels [1,18,3] as constants, scores = the channel means.
    /// Either input [3,H,W] with symbolic H,W and outputs in torchvision's order, or input [1,3,8,8] with a batch
    /// dimension on every output and the outputs in another order (found by name).
    /// </summary>
    private static byte[] Detector(bool fixedSize)
    {
        float[] boxes = [.. s_boxes.SelectMany(b => b).Select(v => (float)v)];
        VisionOnnx model = new VisionOnnx()
            .Node("Identity", ["boxes_init"], ["boxes"])
            .Node("Identity", ["labels_init"], ["labels"]);
        if (fixedSize)
        {
            return model
                .Node("ReduceMean", ["image"], ["scores"], ("axes", new long[] { 2, 3 }), ("keepdims", 0))
                .FloatInit("boxes_init", [1, 3, 4], boxes)
                .Int64Init("labels_init", [1, 3], [1, 18, 3])
                .Input("image", 1, 3, 8, 8)
                .Output("scores", 1, 3)
                .Output("boxes", 1, 3, 4)
                .Int64Output("labels", 1, 3)
                .Build();
        }
        return model
            .Node("ReduceMean", ["image"], ["scores"], ("axes", new long[] { 1, 2 }), ("keepdims", 0))
            .FloatInit("boxes_init", [3, 4], boxes)
            .Int64Init("labels_init", [3], [1, 18, 3])
            .Input("image", 3, "H", "W")
            .Output("boxes", 3, 4)
            .Int64Output("labels", 3)
            .Output("scores", 3)
            .Build();
    }

    // ---------------------------------------------------------------- expectations, computed here

    private static double[] NormalisedMeans((byte R, byte G, byte B) colour)
    {
        byte[] values = [colour.R, colour.G, colour.B];
        return [.. Enumerable.Range(0, 3).Select(c => ((values[c] / 255.0) - s_mean[c]) / s_std[c])];
    }

    private static double[] Logits((byte R, byte G, byte B) colour, int classes)
    {
        double[] m = NormalisedMeans(colour);
        return [.. Enumerable.Range(0, classes).Select(j => Enumerable.Range(0, 3).Sum(c => m[c] * ClassifierWeight(c, j)) + ClassifierBias(j))];
    }

    private static double[] SegmenterLogits((byte R, byte G, byte B) colour, int classes)
    {
        double[] m = NormalisedMeans(colour);
        return [.. Enumerable.Range(0, classes).Select(j => Enumerable.Range(0, 3).Sum(c => m[c] * SegmenterWeight(j, c)) + (j / 4.0))];
    }

    private static double[] Softmax(double[] logits)
    {
        double max = logits.Max();
        double sum = logits.Sum(l => Math.Exp(l - max));
        return [.. logits.Select(l => Math.Exp(l - max) / sum)];
    }

    private static List<(string Label, double P)> ExpectedTopK(double[] logits, int k, Func<int, string> label)
    {
        double[] p = Softmax(logits);
        int[] order = [.. Enumerable.Range(0, p.Length).OrderByDescending(i => p[i])];
        for (int i = 1; i < Math.Min(k + 1, order.Length); i++)
        {
            (p[order[i - 1]] / p[order[i]]).ShouldBeGreaterThan(1.01, "the test model should not tie two classes it ranks");
        }
        return [.. order.Take(k).Select(i => (label(i), p[i]))];
    }

    private static (int Class, double P) ExpectedPixel(double[] logits)
    {
        double[] p = Softmax(logits);
        int best = Array.IndexOf(p, p.Max());
        return (best, p[best]);
    }

    private static async Task ShouldBeClassesAsync(HttpResponseMessage response, List<(string Label, double P)> expected)
    {
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        JsonProperty[] classes = [.. json.RootElement.EnumerateObject()];
        classes.Select(c => c.Name).ShouldBe(expected.Select(e => e.Label), body);
        // float32 pooling over 50,176 pixels in ONNX Runtime: agreement to about 1e-5, far below one pixel level (~1e-2).
        classes.Select(c => c.Value.GetDouble()).ShouldBe(expected.Select(e => e.P), 1e-4, body);
    }

    private static async Task ShouldBeDetectionsAsync(HttpResponseMessage response, (string Label, double[] Box, double Score)[] expected)
    {
        string body = await response.Content.ReadAsStringAsync();
        response.StatusCode.ShouldBe(HttpStatusCode.OK, body);
        using JsonDocument json = JsonDocument.Parse(body);
        json.RootElement.GetArrayLength().ShouldBe(expected.Length, body);
        for (int i = 0; i < expected.Length; i++)
        {
            JsonProperty[] properties = [.. json.RootElement[i].EnumerateObject()];
            properties.Select(p => p.Name).ShouldBe([expected[i].Label, "score"], body);
            properties[0].Value.EnumerateArray().Select(v => v.GetDouble()).ShouldBe(expected[i].Box, 1e-5, body);
            properties[1].Value.GetDouble().ShouldBe(expected[i].Score, 1e-5, body);
        }
    }

    // ---------------------------------------------------------------- pictures and archives

    /// <summary>A lossless PNG whose pixel (x, y) has the colour <paramref name="colour"/> gives.</summary>
    private static byte[] Png(int width, int height, Func<int, int, (byte R, byte G, byte B)> colour)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        byte[] rgba = new byte[width * height * 4];
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                (byte r, byte g, byte b) = colour(x, y);
                int i = ((y * width) + x) * 4;
                (rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]) = (r, g, b, 255);
            }
        }
        System.Runtime.InteropServices.Marshal.Copy(rgba, 0, bitmap.GetPixels(), rgba.Length);
        using SKData data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>Writes a .mar with the model, and optionally index_to_name.json and model-config.yaml, into the store.</summary>
    private static async Task<string> ArchiveAsync(ServerHarness harness, string name, string handler, byte[] model, string? labels = null, string? config = null)
    {
        string folder = Path.Combine(harness.Store, "src-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        string modelPath = Path.Combine(folder, "model.onnx");
        await File.WriteAllBytesAsync(modelPath, model);
        var builder = new ModelArchiveBuilder(new ModelManifest(name, "1.0", "model.onnx", handler) { ConfigFile = config is null ? null : "model-config.yaml" });
        builder.AddFile(modelPath);
        if (labels is not null)
        {
            string path = Path.Combine(folder, "index_to_name.json");
            await File.WriteAllTextAsync(path, labels);
            builder.AddFile(path);
        }
        if (config is not null)
        {
            string path = Path.Combine(folder, "model-config.yaml");
            await File.WriteAllTextAsync(path, config);
            builder.AddFile(path);
        }
        string mar = name + ".mar";
        await builder.WriteAsync(Path.Combine(harness.Store, mar));
        return mar;
    }
}
