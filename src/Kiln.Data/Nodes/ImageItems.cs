using System.Globalization;
using System.Text;
using Kiln.Data.Imaging;

namespace Kiln.Data.Nodes;

/// <summary>A decoded, transformed image as float CHW pixels, with its label when the sample has one.</summary>
/// <param name="Pixels">Channels × height × width floats (normalized when the node normalizes).</param>
/// <param name="Height">Rows.</param>
/// <param name="Width">Columns.</param>
/// <param name="Label">The sample's class label, or -1.</param>
/// <param name="Source">Where the image came from.</param>
public sealed record LabeledImage(float[] Pixels, int Height, int Width, long Label, string Source) : ISourced;

/// <summary>How the image node shapes its output.</summary>
internal enum ImageMode
{
    /// <summary>torchvision RandomResizedCrop(size) (training).</summary>
    RandomResizedCrop,

    /// <summary>Resize the shorter side to <c>resize</c>, then CenterCrop(size) (evaluation).</summary>
    CenterCrop,

    /// <summary>Resize to size × size.</summary>
    Resize,
}

/// <summary>
/// Decodes JPEG/PNG bytes (a blob, a WebDataset sample's image field, or raw bytes) and applies the
/// configured transform; randomness is per sample, from (node seed, sample index), so results do not depend
/// on threads or on resuming.
/// </summary>
internal sealed class ImagePipeline
{
    private static readonly string[] s_imageFields = ["jpg", "jpeg", "png"];
    private readonly ImageMode _mode;
    private readonly int _size;
    private readonly int _resize;
    private readonly bool _flip;
    private readonly ImageNormalizer? _normalizer;
    private readonly string? _field;
    private readonly string _labelField;
    private readonly RandomResizedCrop _crop;

    public ImagePipeline(ImageMode mode, int size, int resize, bool flip, ImageNormalizer? normalizer, string? field, string labelField)
    {
        (_mode, _size, _resize, _flip, _normalizer, _field, _labelField) = (mode, size, resize, flip, normalizer, field, labelField);
        _crop = new RandomResizedCrop(size, size);
    }

    public LabeledImage Apply(object item, ulong seed, long index)
    {
        (byte[] data, long label, string source) = Unpack(item);
        SampleRandom random = SampleRandom.ForSample(seed, index);
        RgbImage shaped;
        switch (_mode)
        {
            case ImageMode.RandomResizedCrop:
                ImageHeader header = ImageDecoder.ReadHeader(data, source);
                CropBox window = _crop.SampleWindow(header.Width, header.Height, ref random);
                int reduction = header.Format == ImageFormat.Jpeg ? ImageDecoder.ChooseJpegReduction(window, _size, _size, 8) : 1;
                using (RgbImage decoded = ImageDecoder.Decode(data, source, reduction))
                {
                    CropBox scaled = reduction == 1 ? window : ImageDecoder.ScaleWindow(window, reduction, decoded.Width, decoded.Height);
                    shaped = Resampler.Resize(decoded, scaled, _size, _size, _flip && random.NextBoolean());
                }
                break;
            case ImageMode.CenterCrop:
                using (RgbImage decoded = ImageDecoder.Decode(data, source))
                using (RgbImage resized = ImageTransforms.ResizeShorterSide(decoded, _resize))
                {
                    shaped = ImageTransforms.CenterCrop(resized, _size, _size);
                }
                if (_flip && random.NextBoolean())
                {
                    ImageTransforms.FlipHorizontallyInPlace(shaped);
                }
                break;
            default:
                using (RgbImage decoded = ImageDecoder.Decode(data, source))
                {
                    shaped = ImageTransforms.Resize(decoded, _size, _size);
                }
                if (_flip && random.NextBoolean())
                {
                    ImageTransforms.FlipHorizontallyInPlace(shaped);
                }
                break;
        }
        using (shaped)
        {
            var pixels = new float[3 * shaped.Width * shaped.Height];
            if (_normalizer is not null)
            {
                _normalizer.Normalize(shaped, pixels);
            }
            else
            {
                ToUnit(shaped, pixels);
            }
            return new LabeledImage(pixels, shaped.Height, shaped.Width, label, source);
        }
    }

    private static void ToUnit(RgbImage image, Span<float> destination)
    {
        int plane = image.Width * image.Height;
        ReadOnlySpan<byte> pixels = image.Pixels;
        for (int i = 0; i < plane; i++)
        {
            destination[i] = pixels[3 * i] / 255f;
            destination[plane + i] = pixels[(3 * i) + 1] / 255f;
            destination[(2 * plane) + i] = pixels[(3 * i) + 2] / 255f;
        }
    }

    private (byte[] Data, long Label, string Source) Unpack(object item)
    {
        switch (item)
        {
            case Sample sample:
                string? field = _field ?? Array.Find(s_imageFields, sample.Fields.ContainsKey);
                if (field is null || !sample.Fields.TryGetValue(field, out byte[]? data))
                {
                    throw new InvalidDataException($"sample has no image field {(_field is null ? "(jpg, jpeg, png)" : $"\"{_field}\"")}; it has {string.Join(", ", sample.Fields.Keys)}");
                }
                long label = -1;
                if (sample.Fields.TryGetValue(_labelField, out byte[]? text))
                {
                    string value = Encoding.UTF8.GetString(text).Trim();
                    if (!long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out label))
                    {
                        throw new InvalidDataException($"label field \"{_labelField}\" is \"{value}\", not an integer");
                    }
                }
                return (data, label, sample.Source);
            case Blob blob:
                return (blob.Data, -1, blob.Source);
            case byte[] bytes:
                return (bytes, -1, "bytes");
            default:
                throw new InvalidDataException($"cannot take an image from {item.GetType().Name}");
        }
    }
}
