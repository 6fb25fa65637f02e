using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kiln.Data.Imaging;

/// <summary>
/// Antialiased bilinear resampling of a window of an <see cref="RgbImage"/>, the filter of Pillow's
/// <c>BILINEAR</c> resize and torchvision's <c>resize(..., antialias=True)</c>.
/// </summary>
/// <remarks>
/// <para>For output index <c>i</c> over an input length <c>n</c> resized to <c>m</c>:
/// <c>scale = n / m</c>, <c>support = max(scale, 1)</c>, <c>center = (i + 0.5) * scale</c>; taps
/// <c>j</c> in <c>[max(0, (int)(center - support + 0.5)), min(n, (int)(center + support + 0.5)))</c>
/// weigh <c>max(0, 1 - |(j - center + 0.5) / support|)</c>, normalised to sum 1. Shrinking widens the
/// triangle to cover every input pixel (antialiasing); enlarging is plain bilinear with half-pixel
/// centres. Taps never leave the window (as torchvision crops first, then resizes).</para>
/// <para>Separable, with a float buffer between the passes and one rounding to bytes at the end
/// (Pillow also rounds between the passes, so results may differ from Pillow's by one level). When the
/// height shrinks, the vertical pass runs first (vectorised over whole rows) so the per-pixel horizontal
/// pass only sees the output's rows; otherwise the horizontal pass runs first. A mirrored output uses
/// mirrored horizontal taps, so flipping costs nothing.</para>
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
            using Taps horizontal = Taps.Compute(window.Width, width, flip);
            using Taps vertical = Taps.Compute(window.Height, height, mirrored: false);
            if (height < window.Height)
            {
                ResizeVerticalFirst(source, window, horizontal, vertical, result);
            }
            else
            {
                ResizeHorizontalFirst(source, window, horizontal, vertical, result);
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ResizeVerticalFirst(RgbImage source, CropBox window, Taps horizontal, Taps vertical, RgbImage result)
    {
        int inputRow = window.Width * 3;
        int outputRow = result.Width * 3;
        // Slack after the last row: the horizontal pass loads four floats at a pixel's first channel.
        float[] columns = ArrayPool<float>.Shared.Rent((result.Height * inputRow) + 8);
        float[] line = ArrayPool<float>.Shared.Rent(outputRow + 8);
        try
        {
            fixed (byte* sourceBase = source.Buffer)
            fixed (float* columnBase = columns)
            fixed (float* lineBase = line)
            fixed (byte* resultBase = result.Buffer)
            {
                byte* windowBase = sourceBase + ((long)window.Y * source.Stride) + (window.X * 3);
                VerticalBytesToFloats(windowBase, source.Stride, inputRow, vertical, columnBase);
                for (int y = 0; y < result.Height; y++)
                {
                    HorizontalFloats(columnBase + ((long)y * inputRow), horizontal, lineBase);
                    FloatsToBytes(lineBase, resultBase + ((long)y * result.Stride), outputRow);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(columns);
            ArrayPool<float>.Shared.Return(line);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void ResizeHorizontalFirst(RgbImage source, CropBox window, Taps horizontal, Taps vertical, RgbImage result)
    {
        int firstRow = vertical.Start[0];
        int rows = vertical.Start[vertical.Length - 1] + vertical.Count - firstRow;
        int outputRow = result.Width * 3;
        float[] buffer = ArrayPool<float>.Shared.Rent((rows * outputRow) + 8);
        try
        {
            fixed (byte* sourceBase = source.Buffer)
            fixed (float* bufferBase = buffer)
            fixed (byte* resultBase = result.Buffer)
            {
                byte* windowBase = sourceBase + ((long)(window.Y + firstRow) * source.Stride) + (window.X * 3);
                for (int r = 0; r < rows; r++)
                {
                    HorizontalBytes(windowBase + ((long)r * source.Stride), horizontal, bufferBase + ((long)r * outputRow));
                }
                VerticalFloatsToBytes(bufferBase, outputRow, firstRow, vertical, resultBase, result.Stride);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
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

    /// <summary>Vertical pass over byte rows into <c>taps.Length</c> float rows of <paramref name="rowLength"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void VerticalBytesToFloats(byte* input, int stride, int rowLength, Taps taps, float* output)
    {
        int count = taps.Count;
        fixed (float* weightBase = taps.Weights)
        {
            for (int y = 0; y < taps.Length; y++, output += rowLength)
            {
                byte* first = input + ((long)taps.Start[y] * stride);
                float* weights = weightBase + (y * count);
                int j = 0;
                if (Avx2.IsSupported)
                {
                    for (; j + 16 <= rowLength; j += 16)
                    {
                        Vector256<float> a = Vector256<float>.Zero, b = a;
                        for (int k = 0; k < count; k++)
                        {
                            byte* line = first + ((long)k * stride) + j;
                            Vector256<float> w = Vector256.Create(weights[k]);
                            a = MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(line)), w, a);
                            b = MultiplyAdd(Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(line + 8)), w, b);
                        }
                        a.Store(output + j);
                        b.Store(output + j + 8);
                    }
                }
                for (; j < rowLength; j++)
                {
                    float sum = 0;
                    for (int k = 0; k < count; k++)
                    {
                        sum = MultiplyAdd(first[((long)k * stride) + j], weights[k], sum);
                    }
                    output[j] = sum;
                }
            }
        }
    }

    /// <summary>Vertical pass over float rows into the destination's byte rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void VerticalFloatsToBytes(float* input, int rowLength, int firstRow, Taps taps, byte* output, int stride)
    {
        int count = taps.Count;
        float* sums = stackalloc float[32];
        fixed (float* weightBase = taps.Weights)
        {
            for (int y = 0; y < taps.Length; y++, output += stride)
            {
                float* first = input + ((long)(taps.Start[y] - firstRow) * rowLength);
                float* weights = weightBase + (y * count);
                int j = 0;
                if (Vector256.IsHardwareAccelerated)
                {
                    for (; j + 32 <= rowLength; j += 32)
                    {
                        Vector256<float> a = Vector256<float>.Zero, b = a, c = a, d = a;
                        for (int k = 0; k < count; k++)
                        {
                            float* line = first + ((long)k * rowLength) + j;
                            Vector256<float> w = Vector256.Create(weights[k]);
                            a = MultiplyAdd(Vector256.Load(line), w, a);
                            b = MultiplyAdd(Vector256.Load(line + 8), w, b);
                            c = MultiplyAdd(Vector256.Load(line + 16), w, c);
                            d = MultiplyAdd(Vector256.Load(line + 24), w, d);
                        }
                        a.Store(sums);
                        b.Store(sums + 8);
                        c.Store(sums + 16);
                        d.Store(sums + 24);
                        FloatsToBytes(sums, output + j, 32);
                    }
                }
                for (; j < rowLength; j++)
                {
                    float sum = 0;
                    for (int k = 0; k < count; k++)
                    {
                        sum = MultiplyAdd(first[((long)k * rowLength) + j], weights[k], sum);
                    }
                    output[j] = ToByte(sum);
                }
            }
        }
    }

    /// <summary>One row's horizontal pass from float RGB into float RGB (four-float stores, left to right).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void HorizontalFloats(float* row, Taps taps, float* output)
    {
        int count = taps.Count;
        int width = taps.Length;
        int x = 0;
        fixed (int* start = taps.Start)
        fixed (float* weights = taps.Weights)
        fixed (float* pairWeights = taps.PairWeights)
        {
            if (Avx.IsSupported)
            {
                // Two output pixels per 256-bit vector: lanes 0-3 pixel x, lanes 4-7 pixel x + 1, with the
                // taps' weights laid out the same way.
                for (; x + 2 <= width; x += 2)
                {
                    float* p0 = row + (start[x] * 3);
                    float* p1 = row + (start[x + 1] * 3);
                    float* w = pairWeights + (x * count * 4);
                    Vector256<float> sum = Vector256<float>.Zero;
                    for (int k = 0; k < count; k++)
                    {
                        Vector256<float> pixels = Vector256.Create(Vector128.Load(p0 + (k * 3)), Vector128.Load(p1 + (k * 3)));
                        sum = MultiplyAdd(pixels, Vector256.Load(w + (k * 8)), sum);
                    }
                    sum.GetLower().Store(output + (x * 3));
                    sum.GetUpper().Store(output + (x * 3) + 3);
                }
            }
            for (; x < width; x++)
            {
                float* p = row + (start[x] * 3);
                float* w = weights + (x * count);
                Vector128<float> sum = Vector128<float>.Zero;
                for (int k = 0; k < count; k++)
                {
                    sum = MultiplyAdd(Vector128.Load(p + (k * 3)), Vector128.Create(w[k]), sum);
                }
                sum.Store(output + (x * 3));
            }
        }
    }

    /// <summary>One row's horizontal pass from byte RGB into float RGB (four-float stores, left to right).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void HorizontalBytes(byte* row, Taps taps, float* output)
    {
        int count = taps.Count;
        fixed (int* start = taps.Start)
        fixed (float* weights = taps.Weights)
        {
            for (int x = 0; x < taps.Length; x++)
            {
                byte* pixel = row + (start[x] * 3);
                float* w = weights + (x * count);
                if (Sse41.IsSupported)
                {
                    Vector128<float> sum = Vector128<float>.Zero;
                    for (int k = 0; k < count; k++)
                    {
                        // Loads R, G, B and the next byte (an image keeps slack past its last pixel).
                        sum = MultiplyAdd(Sse2.ConvertToVector128Single(Sse41.ConvertToVector128Int32(pixel + (k * 3))), Vector128.Create(w[k]), sum);
                    }
                    sum.Store(output + (x * 3));
                }
                else
                {
                    float red = 0, green = 0, blue = 0;
                    for (int k = 0; k < count; k++)
                    {
                        red += pixel[k * 3] * w[k];
                        green += pixel[(k * 3) + 1] * w[k];
                        blue += pixel[(k * 3) + 2] * w[k];
                    }
                    output[x * 3] = red;
                    output[(x * 3) + 1] = green;
                    output[(x * 3) + 2] = blue;
                }
            }
        }
    }

    /// <summary>Rounds (half up) and clamps <paramref name="length"/> floats to bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static unsafe void FloatsToBytes(float* input, byte* output, int length)
    {
        int j = 0;
        if (Avx2.IsSupported)
        {
            Vector256<float> half = Vector256.Create(0.5f);
            Vector256<float> max = Vector256.Create(255f);
            // vpackssdw / vpackuswb work within 128-bit lanes; this puts the four quarters back in order.
            Vector256<int> order = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
            for (; j + 32 <= length; j += 32)
            {
                Vector256<int> a = Avx.ConvertToVector256Int32WithTruncation(Avx.Min(Avx.Max(Avx.Add(Avx.LoadVector256(input + j), half), Vector256<float>.Zero), max));
                Vector256<int> b = Avx.ConvertToVector256Int32WithTruncation(Avx.Min(Avx.Max(Avx.Add(Avx.LoadVector256(input + j + 8), half), Vector256<float>.Zero), max));
                Vector256<int> c = Avx.ConvertToVector256Int32WithTruncation(Avx.Min(Avx.Max(Avx.Add(Avx.LoadVector256(input + j + 16), half), Vector256<float>.Zero), max));
                Vector256<int> d = Avx.ConvertToVector256Int32WithTruncation(Avx.Min(Avx.Max(Avx.Add(Avx.LoadVector256(input + j + 24), half), Vector256<float>.Zero), max));
                Vector256<byte> packed = Avx2.PackUnsignedSaturate(Avx2.PackSignedSaturate(a, b), Avx2.PackSignedSaturate(c, d));
                Avx2.PermuteVar8x32(packed.AsInt32(), order).AsByte().Store(output + j);
            }
        }
        for (; j < length; j++)
        {
            output[j] = ToByte(input[j]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MultiplyAdd(Vector256<float> a, Vector256<float> b, Vector256<float> addend) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, addend) : (a * b) + addend;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> MultiplyAdd(Vector128<float> a, Vector128<float> b, Vector128<float> addend) =>
        Fma.IsSupported ? Fma.MultiplyAdd(a, b, addend) : (a * b) + addend;

    /// <summary>Scalar tails round like the vector bodies (fused when the CPU fuses), so a pixel's value does not depend on where in a row it lands.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MultiplyAdd(float a, float b, float addend) =>
        Fma.IsSupported ? MathF.FusedMultiplyAdd(a, b, addend) : (a * b) + addend;

    private static byte ToByte(float value) => (byte)Math.Clamp((int)(value + 0.5f), 0, 255);

    /// <summary>
    /// Per output index: the first input index and <see cref="Count"/> weights (the same count for every
    /// index: windows near an edge are shifted inwards and padded with zero weights).
    /// </summary>
    private sealed class Taps : IDisposable
    {
        private Taps(int length, int count, int[] start, float[] weights, float[] pairWeights)
        {
            Length = length;
            Count = count;
            Start = start;
            Weights = weights;
            PairWeights = pairWeights;
        }

        /// <summary>Output indexes (the pooled arrays may be longer).</summary>
        public int Length { get; }

        /// <summary>Taps per output index.</summary>
        public int Count { get; }

        public int[] Start { get; }

        /// <summary><see cref="Count"/> weights per output index.</summary>
        public float[] Weights { get; }

        /// <summary>
        /// For output pairs (2p, 2p + 1): per tap, the weight of 2p four times, then that of 2p + 1 four
        /// times, matching two RGB(x) pixels in one 256-bit vector.
        /// </summary>
        public float[] PairWeights { get; }

        /// <summary>Taps for <paramref name="inputLength"/> resized to <paramref name="outputLength"/>; output i uses index n - 1 - i's taps when mirrored.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static Taps Compute(int inputLength, int outputLength, bool mirrored)
        {
            double scale = (double)inputLength / outputLength;
            double support = Math.Max(scale, 1.0);
            double inverseSupport = 1.0 / support;
            int span = Math.Min(inputLength, ((int)Math.Ceiling(support) * 2) + 1);
            int[] firsts = ArrayPool<int>.Shared.Rent(outputLength);
            double[] raw = ArrayPool<double>.Shared.Rent(outputLength * span);
            try
            {
                // The formula's taps, zero weights at either end dropped; the widest decides the count.
                int count = 1;
                for (int i = 0; i < outputLength; i++)
                {
                    double center = (i + 0.5) * scale;
                    int first = Math.Max(0, (int)(center - support + 0.5));
                    int last = Math.Min(inputLength, (int)(center + support + 0.5));
                    Span<double> w = raw.AsSpan(i * span, span);
                    w.Clear();
                    double total = 0;
                    int lo = -1, hi = -1;
                    for (int j = first; j < last && j - first < span; j++)
                    {
                        double t = Math.Abs((j - center + 0.5) * inverseSupport);
                        double v = t < 1.0 ? 1.0 - t : 0.0;
                        w[j - first] = v;
                        total += v;
                        if (v > 0)
                        {
                            lo = lo < 0 ? j : lo;
                            hi = j;
                        }
                    }
                    if (lo < 0)
                    {
                        lo = hi = first;
                    }
                    // Keep only [lo, hi], normalised, at the front.
                    for (int j = lo; j <= hi; j++)
                    {
                        w[j - lo] = total > 0 ? w[j - first] / total : 0;
                    }
                    w[(hi - lo + 1)..].Clear();
                    firsts[i] = lo;
                    count = Math.Max(count, hi - lo + 1);
                }

                int[] start = ArrayPool<int>.Shared.Rent(outputLength);
                float[] weights = ArrayPool<float>.Shared.Rent(outputLength * count);
                float[] pairs = ArrayPool<float>.Shared.Rent(((outputLength + 1) / 2) * count * 8);
                for (int i = 0; i < outputLength; i++)
                {
                    int from = mirrored ? outputLength - 1 - i : i;
                    // Shift a window that would run past the end inwards; its extra taps weigh zero.
                    int first = Math.Min(firsts[from], inputLength - count);
                    int offset = firsts[from] - first;
                    Span<float> w = weights.AsSpan(i * count, count);
                    w.Clear();
                    for (int k = 0; k + offset < count; k++)
                    {
                        w[k + offset] = (float)raw[(from * span) + k];
                    }
                    start[i] = first;
                    int at = ((i / 2) * count * 8) + ((i % 2) * 4);
                    for (int k = 0; k < count; k++, at += 8)
                    {
                        pairs[at] = pairs[at + 1] = pairs[at + 2] = pairs[at + 3] = w[k];
                    }
                }
                return new Taps(outputLength, count, start, weights, pairs);
            }
            finally
            {
                ArrayPool<int>.Shared.Return(firsts);
                ArrayPool<double>.Shared.Return(raw);
            }
        }

        public void Dispose()
        {
            ArrayPool<int>.Shared.Return(Start);
            ArrayPool<float>.Shared.Return(Weights);
            ArrayPool<float>.Shared.Return(PairWeights);
        }
    }
}
