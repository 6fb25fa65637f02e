using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Data.Imaging;

/// <summary>
/// Antialiased bilinear resampling of a window of an <see cref="RgbImage"/>, the filter of Pillow's
/// <c>BILINEAR</c> resize and torchvision's <c>resize(..., antialias=True)</c>.
/// </summary>
/// <remarks>
/// <para>Separable: a horizontal pass over the window's rows into a float buffer, then a vertical pass
/// that rounds to bytes. For output index <c>i</c> over an input length <c>n</c> resized to <c>m</c>:
/// <c>scale = n / m</c>, <c>support = max(scale, 1)</c>, <c>center = (i + 0.5) * scale</c>; taps
/// <c>j</c> in <c>[max(0, (int)(center - support + 0.5)), min(n, (int)(center + support + 0.5)))</c>
/// weigh <c>max(0, 1 - |(j - center + 0.5) / support|)</c>, normalised to sum 1. Shrinking widens the
/// triangle to cover every input pixel (antialiasing); enlarging is plain bilinear with half-pixel
/// centres. Taps never leave the window (as torchvision crops first, then resizes).</para>
/// <para>Unlike Pillow, the intermediate between the passes is float rather than rounded bytes, so
/// results may differ from Pillow's by one level.</para>
/// </remarks>
internal static class Resampler
{
    /// <summary>
    /// Resizes <paramref name="window"/> of <paramref name="source"/> to <paramref name="width"/> x
    /// <paramref name="height"/>, mirrored left-right when <paramref name="flip"/> is set.
    /// </summary>
    /// <returns>A new image the caller owns; <paramref name="source"/> is left as it was.</returns>
    public static RgbImage Resize(RgbImage source, CropBox window, int width, int height, bool flip)
    {
        ArgumentNullException.ThrowIfNull(source);
        window.EnsureFitsIn(source);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);

        RgbImage result = RgbImage.Rent(width, height);
        try
        {
            if (window.Width == width && window.Height == height)
            {
                CopyWindow(source, window, result, flip);
                return result;
            }
            using Taps horizontal = Taps.Compute(window.Width, width);
            using Taps vertical = Taps.Compute(window.Height, height);
            int firstRow = vertical.Start[0];
            int rows = vertical.Start[height - 1] + vertical.Count[height - 1] - firstRow;
            int rowLength = width * 3;
            float[] buffer = ArrayPool<float>.Shared.Rent((rows * rowLength) + 4);
            try
            {
                HorizontalPass(source, window, firstRow, rows, horizontal, buffer, width, flip);
                VerticalPass(buffer, rowLength, firstRow, vertical, result);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    private static void CopyWindow(RgbImage source, CropBox window, RgbImage destination, bool flip)
    {
        for (int y = 0; y < window.Height; y++)
        {
            Span<byte> from = source.Row(window.Y + y).Slice(window.X * 3, window.Width * 3);
            Span<byte> to = destination.Row(y);
            if (!flip)
            {
                from.CopyTo(to);
                continue;
            }
            for (int x = 0, mirrored = window.Width - 1; x < window.Width; x++, mirrored--)
            {
                to[mirrored * 3] = from[x * 3];
                to[(mirrored * 3) + 1] = from[(x * 3) + 1];
                to[(mirrored * 3) + 2] = from[(x * 3) + 2];
            }
        }
    }

    private static unsafe void HorizontalPass(
        RgbImage source, CropBox window, int firstRow, int rows, Taps taps, float[] buffer, int width, bool flip)
    {
        int stride = source.Stride;
        int maxTaps = taps.MaxTaps;
        fixed (byte* sourceBase = source.Buffer)
        fixed (float* bufferBase = buffer)
        fixed (float* weightBase = taps.Weights)
        fixed (int* startBase = taps.Start)
        fixed (int* countBase = taps.Count)
        {
            for (int r = 0; r < rows; r++)
            {
                byte* row = sourceBase + ((long)(window.Y + firstRow + r) * stride) + (window.X * 3);
                float* output = bufferBase + ((long)r * width * 3);
                // Written left to right: each store spills a fourth float into the next pixel, which is
                // written after it (the buffer has four floats of slack for the last one).
                for (int ox = 0; ox < width; ox++)
                {
                    int x = flip ? width - 1 - ox : ox;
                    byte* pixel = row + (startBase[x] * 3);
                    float* weights = weightBase + (x * maxTaps);
                    int count = countBase[x];
                    if (Sse41.IsSupported)
                    {
                        Vector128<float> sum = Vector128<float>.Zero;
                        for (int k = 0; k < count; k++)
                        {
                            // Loads R, G, B and the next byte (the image keeps slack past its last pixel).
                            Vector128<float> value = Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(pixel + (k * 3)));
                            sum += value * Vector128.Create(weights[k]);
                        }
                        sum.Store(output + (ox * 3));
                    }
                    else
                    {
                        float red = 0, green = 0, blue = 0;
                        for (int k = 0; k < count; k++)
                        {
                            float w = weights[k];
                            red += pixel[k * 3] * w;
                            green += pixel[(k * 3) + 1] * w;
                            blue += pixel[(k * 3) + 2] * w;
                        }
                        output[ox * 3] = red;
                        output[(ox * 3) + 1] = green;
                        output[(ox * 3) + 2] = blue;
                    }
                }
            }
        }
    }

    private static unsafe void VerticalPass(float[] buffer, int rowLength, int firstRow, Taps taps, RgbImage destination)
    {
        int maxTaps = taps.MaxTaps;
        int stride = destination.Stride;
        int block = Vector256<float>.Count * 4;
        fixed (float* bufferBase = buffer)
        fixed (byte* destinationBase = destination.Buffer)
        fixed (float* weightBase = taps.Weights)
        {
            for (int y = 0; y < destination.Height; y++)
            {
                float* rows = bufferBase + ((long)(taps.Start[y] - firstRow) * rowLength);
                float* weights = weightBase + (y * maxTaps);
                int count = taps.Count[y];
                byte* output = destinationBase + ((long)y * stride);
                int j = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    Vector256<float> half = Vector256.Create(0.5f);
                    Vector256<float> max = Vector256.Create(255f);
                    for (; j + block <= rowLength; j += block)
                    {
                        Vector256<float> a = Vector256<float>.Zero, b = a, c = a, d = a;
                        for (int k = 0; k < count; k++)
                        {
                            float* line = rows + ((long)k * rowLength) + j;
                            Vector256<float> w = Vector256.Create(weights[k]);
                            a += Vector256.Load(line) * w;
                            b += Vector256.Load(line + 8) * w;
                            c += Vector256.Load(line + 16) * w;
                            d += Vector256.Load(line + 24) * w;
                        }
                        Vector256<int> ia = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(a + half, Vector256<float>.Zero), max));
                        Vector256<int> ib = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(b + half, Vector256<float>.Zero), max));
                        Vector256<int> ic = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(c + half, Vector256<float>.Zero), max));
                        Vector256<int> id = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(d + half, Vector256<float>.Zero), max));
                        Vector256<byte> bytes = Vector256.Narrow(
                            Vector256.Narrow(ia, ib).AsUInt16(), Vector256.Narrow(ic, id).AsUInt16());
                        bytes.Store(output + j);
                    }
                }
                for (; j < rowLength; j++)
                {
                    float sum = 0;
                    for (int k = 0; k < count; k++)
                    {
                        sum += rows[((long)k * rowLength) + j] * weights[k];
                    }
                    output[j] = ToByte(sum);
                }
            }
        }
    }

    private static byte ToByte(float value) => (byte)Math.Clamp((int)(value + 0.5f), 0, 255);

    /// <summary>Per output index: the first input index, the number of taps and their weights.</summary>
    private sealed class Taps : IDisposable
    {
        private Taps(int[] start, int[] count, float[] weights, int maxTaps)
        {
            Start = start;
            Count = count;
            Weights = weights;
            MaxTaps = maxTaps;
        }

        public int[] Start { get; }

        public int[] Count { get; }

        /// <summary><c>MaxTaps</c> weights per output index, the first <c>Count</c> of them used.</summary>
        public float[] Weights { get; }

        public int MaxTaps { get; }

        public static Taps Compute(int inputLength, int outputLength)
        {
            double scale = (double)inputLength / outputLength;
            double support = Math.Max(scale, 1.0);
            int maxTaps = (int)Math.Ceiling(support) * 2 + 1;
            int[] start = ArrayPool<int>.Shared.Rent(outputLength);
            int[] count = ArrayPool<int>.Shared.Rent(outputLength);
            float[] weights = ArrayPool<float>.Shared.Rent(outputLength * maxTaps);
            Span<double> raw = maxTaps <= 256 ? stackalloc double[maxTaps] : new double[maxTaps];
            for (int i = 0; i < outputLength; i++)
            {
                double center = (i + 0.5) * scale;
                int first = Math.Max(0, (int)(center - support + 0.5));
                int last = Math.Min(inputLength, (int)(center + support + 0.5));
                int n = Math.Min(last - first, maxTaps);
                double total = 0;
                for (int k = 0; k < n; k++)
                {
                    double t = Math.Abs((first + k - center + 0.5) / support);
                    raw[k] = t < 1.0 ? 1.0 - t : 0.0;
                    total += raw[k];
                }
                for (int k = 0; k < n; k++)
                {
                    weights[(i * maxTaps) + k] = total > 0 ? (float)(raw[k] / total) : 0f;
                }
                start[i] = first;
                count[i] = n;
            }
            return new Taps(start, count, weights, maxTaps);
        }

        public void Dispose()
        {
            ArrayPool<int>.Shared.Return(Start);
            ArrayPool<int>.Shared.Return(Count);
            ArrayPool<float>.Shared.Return(Weights);
        }
    }
}
