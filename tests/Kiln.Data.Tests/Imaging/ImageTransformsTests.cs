using Kiln.Data.Imaging;

namespace Kiln.Data.Tests.Imaging;

public sealed class ImageTransformsTests
{
    // A 8x6 single-channel pattern and torchvision's outputs for it, from
    // torch.nn.functional.interpolate(x, size, mode="bilinear", antialias=True) on float, rounded.
    private static readonly int[,] s_pattern =
    {
        { 0, 37, 74, 111, 148, 185, 222, 3 },
        { 40, 77, 114, 151, 188, 225, 6, 43 },
        { 80, 117, 154, 191, 228, 9, 46, 83 },
        { 120, 157, 194, 231, 12, 49, 86, 123 },
        { 160, 197, 234, 15, 52, 89, 126, 163 },
        { 200, 237, 18, 55, 92, 129, 166, 203 },
    };

    public static TheoryData<int, int, int[]> TorchvisionResults => new()
    {
        { 4, 3, [55, 121, 163, 84, 126, 164, 98, 81, 182, 108, 86, 148] },
        { 5, 4, [30, 86, 144, 178, 68, 86, 142, 180, 92, 59, 144, 184, 104, 66, 117, 200, 120, 62, 117, 173] },
        { 3, 2, [91, 149, 93, 163, 101, 115] },
        {
            11, 9,
            [
                0, 22, 49, 76, 103, 130, 156, 183, 210, 132, 3, 20, 42, 69, 96, 123, 150, 176, 203, 143, 77, 23,
                47, 69, 95, 122, 149, 176, 193, 189, 69, 28, 50, 73, 95, 122, 149, 176, 203, 181, 53, 41, 54, 76,
                100, 122, 149, 176, 203, 166, 99, 33, 54, 81, 103, 127, 149, 175, 200, 196, 107, 27, 54, 81, 108, 130,
                153, 175, 202, 219, 91, 48, 54, 81, 108, 134, 156, 180, 202, 188, 122, 56, 54, 80, 107, 134, 161, 183,
                200, 222, 167, 20, 47, 74, 100, 127, 154, 181, 203,
            ]
        },
    };

    private static RgbImage Pattern()
    {
        RgbImage image = RgbImage.Rent(8, 6);
        for (int y = 0; y < 6; y++)
        {
            for (int x = 0; x < 8; x++)
            {
                byte v = (byte)s_pattern[y, x];
                image.Row(y)[x * 3] = v;
                image.Row(y)[(x * 3) + 1] = (byte)(255 - v);
                image.Row(y)[(x * 3) + 2] = v;
            }
        }
        return image;
    }

    [Theory]
    [MemberData(nameof(TorchvisionResults))]
    public void Resize_Pattern_MatchesTorchvisionAntialiasedBilinear(int width, int height, int[] expected)
    {
        using RgbImage source = Pattern();

        using RgbImage resized = ImageTransforms.Resize(source, width, height);

        resized.Width.ShouldBe(width);
        resized.Height.ShouldBe(height);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                (byte r, byte g, byte b) = resized.GetPixel(x, y);
                int want = expected[(y * width) + x];
                Math.Abs(r - want).ShouldBeLessThanOrEqualTo(1, $"R at ({x},{y})");
                Math.Abs(g - (255 - want)).ShouldBeLessThanOrEqualTo(1, $"G at ({x},{y})");
                b.ShouldBe(r);
            }
        }
    }

    [Theory]
    [InlineData(500, 375, 224, 224)]
    [InlineData(37, 23, 224, 224)]
    [InlineData(300, 17, 7, 64)]
    [InlineData(5, 5, 1, 1)]
    public void Resize_ConstantImage_StaysConstant(int width, int height, int toWidth, int toHeight)
    {
        using RgbImage solid = TestImages.Solid(width, height, 201, 3, 77);

        using RgbImage resized = ImageTransforms.Resize(solid, toWidth, toHeight);

        ReadOnlySpan<byte> pixels = resized.Pixels;
        for (int i = 0; i < pixels.Length; i += 3)
        {
            pixels[i].ShouldBe((byte)201);
            pixels[i + 1].ShouldBe((byte)3);
            pixels[i + 2].ShouldBe((byte)77);
        }
    }

    [Fact]
    public void Resize_SameSize_CopiesExactly()
    {
        using RgbImage noise = TestImages.Noise(31, 19, seed: 11);

        using RgbImage resized = ImageTransforms.Resize(noise, 31, 19);

        TestImages.Bytes(resized).ShouldBe(TestImages.Bytes(noise));
    }

    [Fact]
    public void Resize_LargeNoise_MatchesDoublePrecisionReference()
    {
        using RgbImage noise = TestImages.Noise(140, 90, seed: 12);

        using RgbImage resized = ImageTransforms.Resize(noise, 61, 47);

        byte[] reference = ReferenceResize(noise, new CropBox(0, 0, 140, 90), 61, 47);
        byte[] actual = TestImages.Bytes(resized);
        for (int i = 0; i < actual.Length; i++)
        {
            Math.Abs(actual[i] - reference[i]).ShouldBeLessThanOrEqualTo(1, $"byte {i}");
        }
    }

    [Theory]
    [InlineData(200, 40)] // wider, shorter: vertical pass first, horizontal enlarges
    [InlineData(30, 120)] // narrower, taller: horizontal pass first
    [InlineData(224, 224)]
    public void Resize_MixedDirections_MatchesDoublePrecisionReference(int width, int height)
    {
        using RgbImage noise = TestImages.Noise(97, 83, seed: 17);
        var box = new CropBox(3, 2, 90, 80);

        using RgbImage resized = ImageTransforms.ResizedCrop(noise, box, width, height);

        byte[] reference = ReferenceResize(noise, box, width, height);
        TestImages.Bytes(resized).Zip(reference, (a, b) => Math.Abs(a - b)).Max().ShouldBeLessThanOrEqualTo(1);
    }

    [Fact]
    public void ResizedCrop_ReadsOnlyTheWindow()
    {
        using RgbImage noise = TestImages.Noise(120, 80, seed: 13);
        var box = new CropBox(17, 9, 71, 53);
        using RgbImage cropped = ImageTransforms.Crop(noise, box);

        using RgbImage fused = ImageTransforms.ResizedCrop(noise, box, 40, 30);
        using RgbImage twoStep = ImageTransforms.Resize(cropped, 40, 30);

        TestImages.Bytes(fused).ShouldBe(TestImages.Bytes(twoStep));
        byte[] reference = ReferenceResize(noise, box, 40, 30);
        TestImages.Bytes(fused).Zip(reference, (a, b) => Math.Abs(a - b)).Max().ShouldBeLessThanOrEqualTo(1);
    }

    [Theory]
    [InlineData(33, 29)] // shrinking: vertical pass first
    [InlineData(100, 90)] // enlarging: horizontal pass first
    [InlineData(77, 61)] // same size: a copy
    public void ResizedCrop_WithFlip_EqualsResizeThenMirror(int width, int height)
    {
        using RgbImage noise = TestImages.Noise(90, 70, seed: 14);
        var box = new CropBox(5, 6, 77, 61);

        using RgbImage flipped = ImageTransforms.ResizedCrop(noise, box, width, height, flip: true);
        using RgbImage plain = ImageTransforms.ResizedCrop(noise, box, width, height);
        ImageTransforms.FlipHorizontallyInPlace(plain);

        TestImages.Bytes(flipped).ShouldBe(TestImages.Bytes(plain));
    }

    [Fact]
    public void ResizedCrop_BoxOutsideImage_Throws()
    {
        using RgbImage noise = TestImages.Noise(10, 10, seed: 15);

        Should.Throw<ArgumentOutOfRangeException>(() => ImageTransforms.ResizedCrop(noise, new CropBox(5, 0, 6, 10), 4, 4));
        Should.Throw<ArgumentOutOfRangeException>(() => ImageTransforms.ResizedCrop(noise, new CropBox(0, 0, 0, 10), 4, 4));
    }

    [Theory]
    [InlineData(7)]
    [InlineData(8)]
    public void FlipHorizontallyInPlace_MirrorsEveryRow(int width)
    {
        using RgbImage image = TestImages.Coordinates(width, 5);

        ImageTransforms.FlipHorizontallyInPlace(image);

        for (int y = 0; y < 5; y++)
        {
            for (int x = 0; x < width; x++)
            {
                int from = width - 1 - x;
                image.GetPixel(x, y).ShouldBe(((byte)from, (byte)y, (byte)(from + y)));
            }
        }
    }

    [Fact]
    public void CenterCrop_SmallerThanImage_PicksTheMiddle()
    {
        using RgbImage image = TestImages.Coordinates(100, 60);

        using RgbImage crop = ImageTransforms.CenterCrop(image, 40, 21);

        crop.Width.ShouldBe(40);
        crop.Height.ShouldBe(21);
        // left = round(60 / 2) = 30; top = round(39 / 2) = round(19.5) = 20 (half to even, like Python).
        crop.GetPixel(0, 0).ShouldBe(((byte)30, (byte)20, (byte)50));
        crop.GetPixel(39, 20).ShouldBe(((byte)69, (byte)40, (byte)109));
    }

    [Fact]
    public void CenterCrop_HalfPixelOffsetRoundsToEven()
    {
        using RgbImage image = TestImages.Coordinates(11, 11);

        using RgbImage crop = ImageTransforms.CenterCrop(image, 6, 6);

        // (11 - 6) / 2 = 2.5 rounds to 2, as torchvision's int(round(2.5)).
        crop.GetPixel(0, 0).ShouldBe(((byte)2, (byte)2, (byte)4));
    }

    [Fact]
    public void CenterCrop_LargerThanImage_CentresItOnBlack()
    {
        using RgbImage image = TestImages.Solid(4, 2, 9, 9, 9);

        using RgbImage crop = ImageTransforms.CenterCrop(image, 7, 5);

        // torchvision pads left (7 - 4) / 2 = 1, top (5 - 2) / 2 = 1.
        for (int y = 0; y < 5; y++)
        {
            for (int x = 0; x < 7; x++)
            {
                bool inside = x >= 1 && x < 5 && y >= 1 && y < 3;
                crop.GetPixel(x, y).ShouldBe(inside ? ((byte)9, (byte)9, (byte)9) : ((byte)0, (byte)0, (byte)0), $"({x},{y})");
            }
        }
    }

    [Theory]
    [InlineData(500, 375, 256, 341, 256)]
    [InlineData(375, 500, 256, 256, 341)]
    [InlineData(300, 300, 128, 128, 128)]
    public void ResizeShorterSide_KeepsAspectTruncatingLongSide(int width, int height, int size, int expectedWidth, int expectedHeight)
    {
        using RgbImage image = TestImages.Solid(width, height, 1, 2, 3);

        using RgbImage resized = ImageTransforms.ResizeShorterSide(image, size);

        resized.Width.ShouldBe(expectedWidth);
        resized.Height.ShouldBe(expectedHeight);
    }

    [Fact]
    public void Normalize_WritesChwWithTheExactFormula()
    {
        using RgbImage image = TestImages.Noise(13, 7, seed: 16);
        float[] mean = [0.485f, 0.456f, 0.406f];
        float[] std = [0.229f, 0.224f, 0.225f];
        var normalizer = new ImageNormalizer(mean, std);
        var destination = new float[3 * 13 * 7];

        normalizer.Normalize(image, destination);

        for (int y = 0; y < 7; y++)
        {
            for (int x = 0; x < 13; x++)
            {
                (byte r, byte g, byte b) = image.GetPixel(x, y);
                byte[] values = [r, g, b];
                for (int c = 0; c < 3; c++)
                {
                    float expected = ((values[c] / 255f) - mean[c]) / std[c];
                    destination[(c * 13 * 7) + (y * 13) + x].ShouldBe(expected);
                }
            }
        }
    }

    [Fact]
    public void Normalize_IntoSliceOfBatch_LeavesOtherSamplesUntouched()
    {
        using RgbImage image = TestImages.Solid(4, 4, 255, 0, 51);
        var batch = new float[3 * 3 * 4 * 4];
        Array.Fill(batch, float.NaN);

        new ImageNormalizer([0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]).Normalize(image, batch.AsSpan(48, 48));

        batch[..48].ShouldAllBe(v => float.IsNaN(v));
        batch[96..].ShouldAllBe(v => float.IsNaN(v));
        batch[48..64].ShouldAllBe(v => v == 1f);
        batch[64..80].ShouldAllBe(v => v == -1f);
        batch[80..96].ShouldAllBe(v => v == ((51 / 255f) - 0.5f) / 0.5f);
    }

    [Fact]
    public void Normalize_WrongDestinationLength_Throws()
    {
        using RgbImage image = TestImages.Solid(4, 4, 1, 1, 1);

        Should.Throw<ArgumentException>(() => ImageNormalizer.ImageNet.Normalize(image, new float[47]));
    }

    [Fact]
    public void ImageNormalizer_InvalidParameters_Throw()
    {
        Should.Throw<ArgumentException>(() => new ImageNormalizer([0.5f, 0.5f], [1f, 1f]));
        Should.Throw<ArgumentException>(() => new ImageNormalizer([0.5f, 0.5f, 0.5f], [1f, 0f, 1f]));
    }

    [Fact]
    public void Dispose_Twice_IsHarmlessAndLaterUseThrows()
    {
        RgbImage image = TestImages.Solid(2, 2, 1, 1, 1);
        image.Dispose();
        image.Dispose();

        Should.Throw<ObjectDisposedException>(() => image.Pixels.Length);
    }

    /// <summary>A direct, double-precision transcription of the antialiased bilinear formula, one output pixel at a time.</summary>
    private static byte[] ReferenceResize(RgbImage image, CropBox box, int width, int height)
    {
        var output = new byte[width * height * 3];
        (int first, double[] weights)[] columns = Weights(box.Width, width);
        (int first, double[] weights)[] rows = Weights(box.Height, height);
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                for (int c = 0; c < 3; c++)
                {
                    double sum = 0;
                    for (int i = 0; i < rows[y].weights.Length; i++)
                    {
                        double rowSum = 0;
                        for (int j = 0; j < columns[x].weights.Length; j++)
                        {
                            rowSum += columns[x].weights[j] * image.Row(box.Y + rows[y].first + i)[((box.X + columns[x].first + j) * 3) + c];
                        }
                        sum += rows[y].weights[i] * rowSum;
                    }
                    output[(((y * width) + x) * 3) + c] = (byte)Math.Clamp((int)Math.Round(sum, MidpointRounding.AwayFromZero), 0, 255);
                }
            }
        }
        return output;
    }

    private static (int first, double[] weights)[] Weights(int input, int output)
    {
        double scale = (double)input / output, support = Math.Max(scale, 1);
        var result = new (int, double[])[output];
        for (int i = 0; i < output; i++)
        {
            double center = (i + 0.5) * scale;
            int first = Math.Max(0, (int)(center - support + 0.5));
            int last = Math.Min(input, (int)(center + support + 0.5));
            double[] w = Enumerable.Range(first, last - first).Select(j => Math.Max(0, 1 - Math.Abs((j - center + 0.5) / support))).ToArray();
            double total = w.Sum();
            result[i] = (first, w.Select(v => v / total).ToArray());
        }
        return result;
    }
}
