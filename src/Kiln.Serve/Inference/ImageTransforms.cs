using System.Globalization;
using System.Text;
using System.Text.Json;
using SkiaSharp;

namespace Kiln.Serve.Inference;

/// <summary>A decoded image: tightly packed RGBA bytes (straight alpha), row by row.</summary>
internal sealed record DecodedImage(byte[] Rgba, int Width, int Height);

/// <summary>
/// Image decoding and the torchvision transforms the vision handlers share: decode (SkiaSharp), <c>Resize</c> with
/// PIL's antialiased bilinear filter, <c>CenterCrop</c>, <c>ToTensor</c> and ImageNet <c>Normalize</c>, plus softmax,
/// <c>index_to_name.json</c> labels and the handler keys of model-config.yaml.
/// </summary>
internal static class ImageTransforms
{
    /// <summary>The crop TorchServe's vision handlers use when the model does not declare its height and width.</summary>
    public const int DefaultSize = 224;

    /// <summary>TorchServe's <c>Resize(256)</c> before <c>CenterCrop(224)</c>: the shorter side is this much larger than the crop.</summary>
    public const double ResizeRatio = 256.0 / 224.0;

    /// <summary>The archive file holding class labels, as TorchServe names it.</summary>
    public const string LabelFile = IndexToName.FileName;

    /// <summary>PIL's <c>Image.MAX_IMAGE_PIXELS</c>: larger images are refused before decoding (decompression bombs).</summary>
    public const long MaxPixels = 89_478_485;

    /// <summary>The longest side an image may be resized to (extreme aspect ratios are refused rather than overflowing).</summary>
    private const long MaxResizedSide = 1 << 20;

    internal const string NotAnImage = "The body is not a decodable image; send JPEG, PNG, WebP, GIF or BMP bytes.";

    private static readonly float[] s_mean = [0.485f, 0.456f, 0.406f];
    private static readonly float[] s_std = [0.229f, 0.224f, 0.225f];

    /// <summary>
    /// Decodes and resizes an image (bilinear, no crop) to a [1,3,H,W] planar RGB tensor (0..255, or ImageNet-normalised);
    /// the <c>image_embedder</c>'s preprocessing.
    /// </summary>
    public static FloatTensor DecodeResized(ReadOnlySpan<byte> body, int height, int width, bool normalize)
    {
        using SKBitmap? decoded = TryDecode(body) ?? throw ServeException.BadRequest(NotAnImage);
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using SKBitmap converted = decoded.Width == width && decoded.Height == height && decoded.ColorType == SKColorType.Rgba8888
            ? decoded.Copy()
            : decoded.Resize(info, new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.None))
              ?? throw ServeException.BadRequest("The image could not be resized.");
        ReadOnlySpan<byte> pixels = converted.GetPixelSpan();
        int plane = width * height;
        float[] data = new float[3 * plane];
        int rowBytes = converted.RowBytes;
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                int source = (y * rowBytes) + (x * 4);
                int target = (y * width) + x;
                for (int c = 0; c < 3; c++)
                {
                    float value = pixels[source + c];
                    data[(c * plane) + target] = normalize ? ((value / 255f) - s_mean[c]) / s_std[c] : value;
                }
            }
        }
        return new FloatTensor(data, [1, 3, height, width]);
    }

    /// <summary>
    /// Decodes an image body to RGBA at its own size. A body SkiaSharp cannot read is tried once more as base64 text
    /// (TorchServe's vision handlers accept base64 strings too).
    /// </summary>
    /// <exception cref="ServeException">400: not a decodable image.</exception>
    public static DecodedImage Decode(ReadOnlySpan<byte> body)
    {
        using SKBitmap? decoded = TryDecodeBounded(body) ?? TryDecodeBase64(body) ?? throw ServeException.BadRequest(NotAnImage);
        int width = decoded.Width, height = decoded.Height;
        if (width <= 0 || height <= 0)
        {
            throw ServeException.BadRequest(NotAnImage);
        }
        var info = new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        byte[] rgba = new byte[width * height * 4];
        System.Runtime.InteropServices.GCHandle pin = System.Runtime.InteropServices.GCHandle.Alloc(rgba, System.Runtime.InteropServices.GCHandleType.Pinned);
        try
        {
            using SKPixmap source = decoded.PeekPixels();
            if (source is null || !source.ReadPixels(info, pin.AddrOfPinnedObject(), width * 4))
            {
                throw ServeException.BadRequest(NotAnImage);
            }
        }
        finally
        {
            pin.Free();
        }
        return new DecodedImage(rgba, width, height);
    }

    /// <summary>
    /// The model's image height and width from an input declared [N,3,H,W] (or [3,H,W] when <paramref name="allowRank3"/>):
    /// fixed dimensions as declared, symbolic ones null. Empty (undeclared) dimensions give nulls.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: another input shape.</exception>
    public static (int? Height, int? Width) DeclaredSize(long[] dims, string handler, bool allowRank3 = false)
    {
        if (dims.Length == 0)
        {
            return (null, null);
        }
        int channel = dims.Length - 3;
        if ((dims.Length != 4 && !(allowRank3 && dims.Length == 3)) || dims[channel] is not (3 or <= 0))
        {
            throw new ServeException(400, "ModelException", $"{handler} needs a model input shaped [N,3,H,W]{(allowRank3 ? " or [3,H,W]" : "")}; this one is [{string.Join(",", dims)}].");
        }
        long h = dims[channel + 1], w = dims[channel + 2];
        return (h > 0 ? (int)h : null, w > 0 ? (int)w : null);
    }

    /// <summary>
    /// TorchServe's classifier/segmenter preprocessing for a crop of <paramref name="height"/>×<paramref name="width"/>:
    /// <c>Resize</c> (shorter side to 256 for a 224 crop, in general to round(max(H,W)·256/224)), <c>CenterCrop</c>,
    /// <c>ToTensor</c>, ImageNet <c>Normalize</c>. Returns [1,3,H,W].
    /// </summary>
    public static FloatTensor ResizeCropNormalize(DecodedImage image, int height, int width)
    {
        int shorter = Math.Max(Math.Max(height, width), (int)Math.Round(Math.Max(height, width) * ResizeRatio, MidpointRounding.ToEven));
        long longer = (long)shorter * Math.Max(image.Width, image.Height) / Math.Min(image.Width, image.Height);
        if (longer > MaxResizedSide)
        {
            throw ServeException.BadRequest($"The image is {image.Width}×{image.Height} pixels; resized to a shorter side of {shorter} its longer side would be {longer} pixels, more than {MaxResizedSide}.");
        }
        (int resizedW, int resizedH) = image.Width <= image.Height ? (shorter, (int)longer) : ((int)longer, shorter);
        int top = (int)Math.Round((resizedH - height) / 2.0, MidpointRounding.ToEven);
        int left = (int)Math.Round((resizedW - width) / 2.0, MidpointRounding.ToEven);
        float[] data = Resample(image, resizedW, resizedH, left, top, width, height);
        Normalize(data, width * height);
        return new FloatTensor(data, [1, 3, height, width]);
    }

    /// <summary>
    /// <c>ToTensor</c> (0..1 planar RGB) at the image's own size, or resized (no crop, aspect not kept) to the model's
    /// fixed height/width where it declares them. Returns [1,3,H,W].
    /// </summary>
    public static FloatTensor ToTensor(DecodedImage image, int? height, int? width)
    {
        int h = height ?? image.Height, w = width ?? image.Width;
        float[] data = Resample(image, w, h, 0, 0, w, h);
        for (int i = 0; i < data.Length; i++)
        {
            data[i] /= 255f;
        }
        return new FloatTensor(data, [1, 3, h, w]);
    }

    /// <summary>
    /// Resizes the image to <paramref name="resizedW"/>×<paramref name="resizedH"/> with PIL's bilinear filter (a triangle
    /// filter widened by the scale factor when shrinking, so downscaling is antialiased, as torchvision's <c>Resize</c> on
    /// PIL images does) and returns only the window at (<paramref name="left"/>, <paramref name="top"/>) of
    /// <paramref name="outW"/>×<paramref name="outH"/>, as planar RGB floats in 0..255. Same size is an exact copy.
    /// </summary>
    public static float[] Resample(DecodedImage image, int resizedW, int resizedH, int left, int top, int outW, int outH)
    {
        if (resizedW == image.Width && resizedH == image.Height)
        {
            return Window(image, left, top, outW, outH); // the filter's weights are exactly 1 and 0 at scale 1
        }
        (int[] xStart, float[][] xWeights) = Coefficients(image.Width, resizedW, left, outW);
        (int[] yStart, float[][] yWeights) = Coefficients(image.Height, resizedH, top, outH);
        int rowFirst = yStart[0], rowLast = yStart[outH - 1] + yWeights[outH - 1].Length;
        int rows = rowLast - rowFirst;
        // Horizontal pass over the rows the vertical pass reads: [row][x][channel].
        float[] horizontal = new float[rows * outW * 3];
        byte[] rgba = image.Rgba;
        for (int r = 0; r < rows; r++)
        {
            int rowBase = (rowFirst + r) * image.Width * 4;
            for (int x = 0; x < outW; x++)
            {
                float[] weights = xWeights[x];
                int source = rowBase + (xStart[x] * 4);
                float red = 0, green = 0, blue = 0;
                for (int k = 0; k < weights.Length; k++, source += 4)
                {
                    red += weights[k] * rgba[source];
                    green += weights[k] * rgba[source + 1];
                    blue += weights[k] * rgba[source + 2];
                }
                int at = ((r * outW) + x) * 3;
                horizontal[at] = red;
                horizontal[at + 1] = green;
                horizontal[at + 2] = blue;
            }
        }
        int plane = outW * outH;
        float[] planar = new float[3 * plane];
        for (int y = 0; y < outH; y++)
        {
            float[] weights = yWeights[y];
            int firstRow = yStart[y] - rowFirst;
            for (int x = 0; x < outW; x++)
            {
                float red = 0, green = 0, blue = 0;
                for (int k = 0; k < weights.Length; k++)
                {
                    int at = (((firstRow + k) * outW) + x) * 3;
                    red += weights[k] * horizontal[at];
                    green += weights[k] * horizontal[at + 1];
                    blue += weights[k] * horizontal[at + 2];
                }
                int target = (y * outW) + x;
                planar[target] = red;
                planar[plane + target] = green;
                planar[(2 * plane) + target] = blue;
            }
        }
        return planar;
    }

    private static float[] Window(DecodedImage image, int left, int top, int outW, int outH)
    {
        int plane = outW * outH;
        float[] planar = new float[3 * plane];
        byte[] rgba = image.Rgba;
        for (int y = 0; y < outH; y++)
        {
            int source = (((top + y) * image.Width) + left) * 4;
            int target = y * outW;
            for (int x = 0; x < outW; x++, source += 4, target++)
            {
                planar[target] = rgba[source];
                planar[plane + target] = rgba[source + 1];
                planar[(2 * plane) + target] = rgba[source + 2];
            }
        }
        return planar;
    }

    /// <summary>PIL's resampling coefficients for output pixels <paramref name="first"/>.. of a resize from <paramref name="inSize"/> to <paramref name="outSize"/>.</summary>
    private static (int[] Start, float[][] Weights) Coefficients(int inSize, int outSize, int first, int count)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = filterScale; // the bilinear (triangle) filter's support is 1
        int[] start = new int[count];
        float[][] weights = new float[count][];
        for (int k = 0; k < count; k++)
        {
            double center = (first + k + 0.5) * scale;
            int min = Math.Max((int)(center - support + 0.5), 0);
            int max = Math.Min((int)(center + support + 0.5), inSize);
            if (max <= min)
            {
                min = Math.Clamp((int)center, 0, inSize - 1);
                max = min + 1;
            }
            double[] w = new double[max - min];
            double total = 0;
            for (int i = 0; i < w.Length; i++)
            {
                w[i] = Math.Max(0, 1 - Math.Abs((min + i - center + 0.5) / filterScale));
                total += w[i];
            }
            start[k] = min;
            weights[k] = [.. w.Select(v => total > 0 ? (float)(v / total) : 1f / w.Length)];
        }
        return (start, weights);
    }

    /// <summary><c>ToTensor</c> then ImageNet <c>Normalize</c>, in place, on planar RGB 0..255.</summary>
    public static void Normalize(float[] planar, int plane)
    {
        for (int c = 0; c < 3; c++)
        {
            float mean = s_mean[c], std = s_std[c];
            Span<float> values = planar.AsSpan(c * plane, plane);
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = ((values[i] / 255f) - mean) / std;
            }
        }
    }

    /// <summary>Softmax of <paramref name="logits"/> (numerically stable, in double).</summary>
    public static float[] Softmax(ReadOnlySpan<float> logits)
    {
        float[] result = new float[logits.Length];
        if (logits.IsEmpty)
        {
            return result;
        }
        float max = float.NegativeInfinity;
        foreach (float v in logits)
        {
            max = Math.Max(max, v);
        }
        double sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            sum += Math.Exp(logits[i] - max);
        }
        for (int i = 0; i < logits.Length; i++)
        {
            result[i] = (float)(Math.Exp(logits[i] - max) / sum);
        }
        return result;
    }

    /// <summary>Creates a handler over an opened model; disposes the model when <paramref name="create"/> throws.</summary>
    public static IModelHandler Over(ModelBackend model, Func<ModelBackend, IModelHandler> create)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(create);
        try
        {
            return create(model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Reads the archive's <c>index_to_name.json</c> (see <see cref="IndexToName"/>). Null when the archive has none.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: the file is not such JSON.</exception>
    public static IReadOnlyDictionary<long, string>? ReadLabels(HandlerContext context) => IndexToName.Read(context);

    /// <summary>The label of class <paramref name="index"/>, or the index itself as text when there is no mapping for it.</summary>
    public static string LabelOf(IReadOnlyDictionary<long, string>? labels, long index) =>
        labels is not null && labels.TryGetValue(index, out string? label) ? label : index.ToString(CultureInfo.InvariantCulture);

    /// <summary>A model-config.yaml top-level integer key, checked against a minimum.</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: present but not such an integer.</exception>
    public static int ConfigInt(HandlerContext context, string key, int fallback, int minimum)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!context.Archive.Config.TryGetValue(key, out string? text))
        {
            return fallback;
        }
        return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= minimum
            ? value
            : throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be an integer ≥ {minimum}; it is \"{text}\".");
    }

    /// <summary>A model-config.yaml top-level number key in [<paramref name="minimum"/>, <paramref name="maximum"/>].</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: present but not such a number.</exception>
    public static float ConfigFloat(HandlerContext context, string key, float fallback, float minimum, float maximum)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!context.Archive.Config.TryGetValue(key, out string? text))
        {
            return fallback;
        }
        return float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float value) && value >= minimum && value <= maximum
            ? value
            : throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be a number in [{minimum}, {maximum}]; it is \"{text}\".");
    }

    /// <summary>A model-config.yaml top-level boolean key (<c>true</c>/<c>false</c>).</summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: present but not a boolean.</exception>
    public static bool ConfigBool(HandlerContext context, string key, bool fallback)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!context.Archive.Config.TryGetValue(key, out string? text))
        {
            return fallback;
        }
        return bool.TryParse(text, out bool value)
            ? value
            : throw new ServeException(400, "ModelException", $"model-config.yaml: {key} must be true or false; it is \"{text}\".");
    }

    /// <summary>
    /// Runs one batch of images: decodes each body (a bad one fails only its own entry with 400), prepares the decoded
    /// images with <paramref name="prepare"/>, runs the good ones through <paramref name="run"/> and writes each result
    /// with <paramref name="write"/>.
    /// </summary>
    public static HandlerOutput[] RunBatch<T>(
        IReadOnlyList<HandlerInput> batch,
        Func<DecodedImage, T> prepare,
        Func<IReadOnlyList<T>, IReadOnlyList<FloatTensor[]>> run,
        Func<T, FloatTensor[], byte[]> write)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var outputs = new HandlerOutput[batch.Count];
        var prepared = new List<T>(batch.Count);
        var indices = new List<int>(batch.Count);
        for (int i = 0; i < batch.Count; i++)
        {
            try
            {
                prepared.Add(batch[i].Prepared is T early ? early : prepare(Decode(batch[i].Body.Span)));
                indices.Add(i);
            }
            catch (ServeException ex)
            {
                outputs[i] = HandlerOutput.Failed(ex);
            }
        }
        if (prepared.Count == 0)
        {
            return outputs;
        }
        IReadOnlyList<FloatTensor[]> results = run(prepared);
        for (int k = 0; k < indices.Count; k++)
        {
            try
            {
                outputs[indices[k]] = HandlerOutput.Ok(write(prepared[k], results[k]));
            }
            catch (ServeException ex)
            {
                outputs[indices[k]] = HandlerOutput.Failed(ex);
            }
            catch (ArgumentException ex) // Utf8JsonWriter refuses NaN and infinities
            {
                outputs[indices[k]] = HandlerOutput.Failed(new ServeException(503, "InternalServerException", $"Prediction failed: the model's output cannot be written as JSON ({ex.Message}).", ex));
            }
        }
        return outputs;
    }

    /// <summary>Writes JSON with <paramref name="body"/> into a byte array.</summary>
    public static byte[] Json(Action<Utf8JsonWriter> body)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            body(writer);
        }
        return buffer.ToArray();
    }

    private static SKBitmap? TryDecode(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty)
        {
            return null;
        }
        try
        {
            return SKBitmap.Decode(body);
        }
        catch (ArgumentException)
        {
            return null; // SkiaSharp throws when no codec recognises the bytes
        }
    }

    /// <summary>Decodes unless the header announces more than <see cref="MaxPixels"/> pixels (then 400).</summary>
    private static SKBitmap? TryDecodeBounded(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty)
        {
            return null;
        }
        SKImageInfo bounds;
        try
        {
            bounds = SKBitmap.DecodeBounds(body);
        }
        catch (ArgumentException)
        {
            return null;
        }
        if ((long)bounds.Width * bounds.Height > MaxPixels)
        {
            throw ServeException.BadRequest($"The image is {bounds.Width}×{bounds.Height} pixels, more than the {MaxPixels} this server decodes.");
        }
        return TryDecode(body);
    }

    /// <summary>A base64 text body (optionally quoted, or a <c>data:image/…;base64,</c> URI) holding an image.</summary>
    private static SKBitmap? TryDecodeBase64(ReadOnlySpan<byte> body)
    {
        if (body.IsEmpty)
        {
            return null;
        }
        string text = Encoding.ASCII.GetString(body).Trim().Trim('"');
        if (text.StartsWith("data:", StringComparison.OrdinalIgnoreCase) && text.IndexOf("base64,", StringComparison.OrdinalIgnoreCase) is int comma and >= 0)
        {
            text = text[(comma + "base64,".Length)..];
        }
        byte[] bytes = new byte[text.Length];
        return Convert.TryFromBase64String(text, bytes, out int written) && written > 0 ? TryDecodeBounded(bytes.AsSpan(0, written)) : null;
    }
}
