using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Kiln.Data.Imaging;
using Kiln.Data.Nodes;
using static TorchSharp.torch;

namespace Kiln.Data.Benchmarks;

/// <summary>
/// A batch of images [N, 3, 224, 224] float and labels [N] int64. Disposing it hands the image tensor back to
/// the transform's pool for a later batch (a fresh 38 MB tensor per batch costs ~10 ms of page faults).
/// </summary>
internal sealed class ImageBatch(Tensor images, Tensor labels, ImageNetTrainTransform owner) : IDisposable
{
    public Tensor Images { get; } = images;

    public Tensor Labels { get; } = labels;

    public void Dispose()
    {
        owner.Return(Images);
        Labels.Dispose();
    }
}

/// <summary>
/// The ImageNet training transform: decode, RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3), flip with
/// probability 1/2, Normalize(ImageNet mean, std) to float CHW — written straight into a batch tensor.
/// </summary>
/// <remarks>
/// A sample's crop and flip come from <see cref="SampleRandom.ForSample"/>(seed, hash of its key), so they do
/// not depend on which thread ran it. With <c>dctScaling</c>, JPEGs whose crop window is at least twice the
/// output size are decoded reduced (libjpeg-turbo DCT scaling), which changes pixels slightly: off by default.
/// </remarks>
internal sealed class ImageNetTrainTransform(ulong seed, bool dctScaling, int size = 224)
{
    private readonly RandomResizedCrop _crop = new(size, size);
    private readonly ImageNormalizer _normalizer = ImageNormalizer.ImageNet;
    private readonly ConcurrentBag<Tensor> _freeBatches = [];
    private long _collateTicks;

    public int Size => size;

    public int FloatsPerImage => 3 * size * size;

    /// <summary>Decode + random-resized crop to size x size (no flip, no normalize): the ceiling's step.</summary>
    public RgbImage DecodeAndCrop(ReadOnlySpan<byte> encoded, string source, ulong key, bool flip)
    {
        SampleRandom random = SampleRandom.ForSample(seed, (long)key);
        if (!dctScaling)
        {
            using RgbImage image = ImageDecoder.Decode(encoded, source);
            CropBox box = _crop.SampleWindow(image.Width, image.Height, ref random);
            return Resampler.Resize(image, box, size, size, flip && random.NextBoolean());
        }
        ImageHeader header = ImageDecoder.ReadHeader(encoded, source);
        CropBox full = _crop.SampleWindow(header.Width, header.Height, ref random);
        int reduction = header.Format == ImageFormat.Jpeg ? ImageDecoder.ChooseJpegReduction(full, size, size, 8) : 1;
        using RgbImage reduced = ImageDecoder.Decode(encoded, source, reduction);
        CropBox window = reduced.Width == header.Width ? full : ImageDecoder.ScaleWindow(full, reduction, reduced.Width, reduced.Height);
        return Resampler.Resize(reduced, window, size, size, flip && random.NextBoolean());
    }

    /// <summary>The whole transform for one image, written as normalised CHW floats into <paramref name="destination"/>.</summary>
    public void Apply(ReadOnlySpan<byte> encoded, string source, ulong key, Span<float> destination)
    {
        using RgbImage crop = DecodeAndCrop(encoded, source, key, flip: true);
        _normalizer.Normalize(crop, destination);
    }

    /// <summary>Runs the transform over a batch of WebDataset samples into one new batch tensor.</summary>
    public ImageBatch Collate(Sample[] samples)
    {
        long started = Stopwatch.GetTimestamp();
        try
        {
            return CollateCore(samples);
        }
        finally
        {
            Interlocked.Add(ref _collateTicks, Stopwatch.GetTimestamp() - started);
        }
    }

    /// <summary>Seconds spent inside <see cref="Collate"/>, summed over threads.</summary>
    public double CollateSeconds => (double)Interlocked.Read(ref _collateTicks) / Stopwatch.Frequency;

    private ImageBatch CollateCore(Sample[] samples)
    {
        Tensor images = _freeBatches.TryTake(out Tensor? reused) && reused.shape[0] == samples.Length
            ? reused
            : empty([samples.Length, 3, size, size], ScalarType.Float32);
        var labels = new long[samples.Length];
        try
        {
            // The tensor's own memory: each sample is normalised straight into its slice, no copies.
            Span<float> all = MemoryMarshal.Cast<byte, float>(images.bytes);
            for (int i = 0; i < samples.Length; i++)
            {
                Sample sample = samples[i];
                if (!sample.Fields.TryGetValue("jpg", out byte[]? jpeg))
                {
                    throw new InvalidDataException($"{sample.Source} has no .jpg member");
                }
                Apply(jpeg, sample.Source, KeyOf(sample.Key), all.Slice(i * FloatsPerImage, FloatsPerImage));
                labels[i] = sample.Fields.TryGetValue("cls", out byte[]? cls) ? long.Parse(Encoding.ASCII.GetString(cls), System.Globalization.CultureInfo.InvariantCulture) : -1;
            }
            return new ImageBatch(images, tensor(labels), this);
        }
        catch
        {
            images.Dispose();
            throw;
        }
    }

    /// <summary>Takes back a batch's image tensor for reuse (up to 64 kept).</summary>
    public void Return(Tensor images)
    {
        if (_freeBatches.Count < 64)
        {
            _freeBatches.Add(images);
        }
        else
        {
            images.Dispose();
        }
    }

    /// <summary>A stable 64-bit key for a sample name (FNV-1a), the per-sample seed's index.</summary>
    public static ulong KeyOf(string name)
    {
        ulong hash = 14695981039346656037UL;
        foreach (char c in name)
        {
            hash = unchecked((hash ^ c) * 1099511628211UL);
        }
        return hash;
    }
}
