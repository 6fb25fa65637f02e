using Kiln.Data.Imaging;
using SkiaSharp;

namespace Kiln.Data.Tests.Imaging;

public sealed class ImageDecoderTests
{
    // Colour blocks of 16x16 pixels (two JPEG MCUs each way), so block centres are far from chroma edges.
    private static readonly (byte R, byte G, byte B)[] s_blockColors =
    [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255),
        (0, 0, 0), (128, 64, 32), (32, 200, 180), (250, 200, 10),
    ];

    private static RgbImage ColorBlocks()
    {
        RgbImage image = RgbImage.Rent(64, 32);
        for (int y = 0; y < 32; y++)
        {
            for (int x = 0; x < 64; x++)
            {
                (byte r, byte g, byte b) = s_blockColors[((y / 16) * 4) + (x / 16)];
                Span<byte> row = image.Row(y);
                row[x * 3] = r;
                row[(x * 3) + 1] = g;
                row[(x * 3) + 2] = b;
            }
        }
        return image;
    }

    [Fact]
    public void JpegBackend_LibturbojpegInstalled_IsLibjpegTurbo()
    {
        // eng/test.sh installs libturbojpeg0; without it JPEG silently takes the slower SkiaSharp path.
        TurboJpegDecompressor.IsAvailable.ShouldBeTrue("libturbojpeg.so.0 is not loadable: apt-get install libturbojpeg0");
        ImageDecoder.JpegBackend.ShouldStartWith("libjpeg-turbo");
    }

    [Fact]
    public void Decode_ColorBlockJpeg_ColorsWithinJpegTolerance()
    {
        using RgbImage original = ColorBlocks();
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 95);
        ImageDecoder.Sniff(jpeg).ShouldBe(ImageFormat.Jpeg);

        using RgbImage decoded = ImageDecoder.Decode(jpeg, "blocks.jpg");

        decoded.Width.ShouldBe(64);
        decoded.Height.ShouldBe(32);
        for (int block = 0; block < s_blockColors.Length; block++)
        {
            int cx = ((block % 4) * 16) + 8, cy = ((block / 4) * 16) + 8;
            (byte r, byte g, byte b) = decoded.GetPixel(cx, cy);
            (byte er, byte eg, byte eb) = s_blockColors[block];
            Math.Abs(r - er).ShouldBeLessThanOrEqualTo(6, $"red of block {block}");
            Math.Abs(g - eg).ShouldBeLessThanOrEqualTo(6, $"green of block {block}");
            Math.Abs(b - eb).ShouldBeLessThanOrEqualTo(6, $"blue of block {block}");
        }
    }

    [Fact]
    public void Decode_NoiseJpeg_MatchesSkiaSharpDecodeClosely()
    {
        using RgbImage original = TestImages.Noise(97, 61, seed: 3);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 90);

        using RgbImage turbo = ImageDecoder.Decode(jpeg, "noise.jpg");
        using RgbImage skia = SkiaImageDecoder.Decode(jpeg, "noise.jpg", ImageFormat.Jpeg);

        // Both are libjpeg-turbo underneath; only upsampling/IDCT choices may differ by a level or two.
        byte[] a = TestImages.Bytes(turbo), b = TestImages.Bytes(skia);
        a.Length.ShouldBe(b.Length);
        double meanDiff = a.Zip(b, (x, y) => Math.Abs(x - y)).Average();
        meanDiff.ShouldBeLessThan(2.0);
    }

    [Fact]
    public void Decode_GrayscaleJpeg_ExpandsToEqualChannels()
    {
        using var bitmap = new SKBitmap(new SKImageInfo(40, 24, SKColorType.Gray8, SKAlphaType.Opaque));
        Span<byte> gray = bitmap.GetPixelSpan();
        for (int i = 0; i < gray.Length; i++)
        {
            gray[i] = (byte)(i % 40 * 6);
        }
        byte[] jpeg = TestImages.EncodeBitmap(bitmap, SKEncodedImageFormat.Jpeg, 95);

        using RgbImage decoded = ImageDecoder.Decode(jpeg, "gray.jpg");

        decoded.Width.ShouldBe(40);
        for (int x = 0; x < 40; x++)
        {
            (byte r, byte g, byte b) = decoded.GetPixel(x, 12);
            r.ShouldBe(g);
            g.ShouldBe(b);
            Math.Abs(r - (x * 6)).ShouldBeLessThanOrEqualTo(8);
        }
    }

    [Fact]
    public void Decode_Png_RoundTripsExactly()
    {
        using RgbImage original = TestImages.Noise(53, 29, seed: 7);
        byte[] png = TestImages.Encode(original, SKEncodedImageFormat.Png);
        ImageDecoder.Sniff(png).ShouldBe(ImageFormat.Png);

        using RgbImage decoded = ImageDecoder.Decode(png, "noise.png");

        decoded.Width.ShouldBe(53);
        decoded.Height.ShouldBe(29);
        TestImages.Bytes(decoded).ShouldBe(TestImages.Bytes(original));
    }

    [Fact]
    public void Decode_PngWithAlpha_KeepsStoredRgbAndDropsAlpha()
    {
        using var bitmap = new SKBitmap(new SKImageInfo(4, 1, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        byte[] rgba = [200, 100, 50, 0, 10, 20, 30, 128, 1, 2, 3, 255, 255, 255, 255, 1];
        rgba.CopyTo(bitmap.GetPixelSpan());
        byte[] png = TestImages.EncodeBitmap(bitmap, SKEncodedImageFormat.Png);

        using RgbImage decoded = ImageDecoder.Decode(png, "alpha.png");

        TestImages.Bytes(decoded).ShouldBe(new byte[] { 200, 100, 50, 10, 20, 30, 1, 2, 3, 255, 255, 255 });
    }

    [Fact]
    public void ReadHeader_JpegAndPng_ReturnFormatAndSize()
    {
        using RgbImage image = TestImages.Noise(33, 17, seed: 1);

        ImageDecoder.ReadHeader(TestImages.Encode(image, SKEncodedImageFormat.Jpeg, 90), "a.jpg")
            .ShouldBe(new ImageHeader(ImageFormat.Jpeg, 33, 17));
        ImageDecoder.ReadHeader(TestImages.Encode(image, SKEncodedImageFormat.Png), "a.png")
            .ShouldBe(new ImageHeader(ImageFormat.Png, 33, 17));
    }

    [Fact]
    public void Decode_JpegReductionTwo_HalvesSizeAndKeepsContent()
    {
        using RgbImage original = TestImages.Coordinates(200, 120);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 95);

        using RgbImage half = ImageDecoder.Decode(jpeg, "ramp.jpg", jpegReduction: 2);
        using RgbImage reference = ImageTransforms.Resize(original, 100, 60);

        half.Width.ShouldBe(100);
        half.Height.ShouldBe(60);
        byte[] a = TestImages.Bytes(half), b = TestImages.Bytes(reference);
        a.Zip(b, (x, y) => Math.Abs(x - y)).Average().ShouldBeLessThan(3.0);
    }

    [Fact]
    public void Decode_JpegReductionOfOddSize_RoundsUp()
    {
        using RgbImage original = TestImages.Noise(101, 35, seed: 2);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 80);

        using RgbImage eighth = ImageDecoder.Decode(jpeg, "odd.jpg", jpegReduction: 8);

        eighth.Width.ShouldBe(13);
        eighth.Height.ShouldBe(5);
    }

    [Theory]
    [InlineData(1000, 900, 8, 4)] // 250x225 still covers 224x224; 125x112 would not
    [InlineData(1000, 900, 2, 2)] // capped by maxReduction
    [InlineData(447, 900, 8, 1)] // 223 columns at 1/2 is too few
    [InlineData(1792, 1792, 8, 8)]
    public void ChooseJpegReduction_KeepsTheWindowAtLeastTheOutputSize(int width, int height, int maxReduction, int expected)
    {
        ImageDecoder.ChooseJpegReduction(new CropBox(10, 20, width, height), 224, 224, maxReduction).ShouldBe(expected);
    }

    [Fact]
    public void ScaleWindow_MapsEdgesToTheNearestReducedPixelInsideTheImage()
    {
        // 101x35 at 1/4 is 26x9; the window 5..97 x 3..35 maps to round(1.25)=1 .. min(26, round(24.25)=24), 1 .. 9.
        ImageDecoder.ScaleWindow(new CropBox(5, 3, 92, 32), 4, 26, 9).ShouldBe(new CropBox(1, 1, 23, 8));
        ImageDecoder.ScaleWindow(new CropBox(5, 3, 92, 32), 1, 101, 35).ShouldBe(new CropBox(5, 3, 92, 32));
        ImageDecoder.ScaleWindow(new CropBox(100, 34, 1, 1), 8, 13, 5).FitsIn(13, 5).ShouldBeTrue();
    }

    [Fact]
    public void Decode_InvalidReduction_Throws()
    {
        Should.Throw<ArgumentOutOfRangeException>(() => ImageDecoder.Decode([0xFF, 0xD8, 0xFF], "x.jpg", jpegReduction: 3));
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.9)]
    public void Decode_TruncatedJpeg_ThrowsNamingSource(double keep)
    {
        using RgbImage original = TestImages.Noise(64, 64, seed: 4);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 90);
        byte[] truncated = jpeg[..(int)(jpeg.Length * keep)];

        InvalidDataException error = Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(truncated, "shard-000003.tar:000042.jpg"));

        error.Message.ShouldContain("shard-000003.tar:000042.jpg");
        error.Message.ShouldContain("JPEG");
    }

    [Fact]
    public void Decode_JpegCutInsideHeader_ThrowsNamingSource()
    {
        using RgbImage original = TestImages.Noise(16, 16, seed: 5);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 90);

        InvalidDataException error = Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(jpeg.AsSpan(0, 40), "head.jpg"));

        error.Message.ShouldContain("head.jpg");
    }

    [Fact]
    public void Decode_CorruptJpegScan_ThrowsNamingSource()
    {
        using RgbImage original = TestImages.Noise(64, 64, seed: 6);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 90);
        // Keep the headers, replace the entropy-coded scan with a run of 0xFF 0x00 ... and a bogus marker.
        int scan = jpeg.AsSpan().IndexOf(new byte[] { 0xFF, 0xDA }) + 20;
        byte[] corrupt = [.. jpeg[..scan], .. Enumerable.Repeat((byte)0xFF, 64), 0xC3, .. Enumerable.Repeat((byte)0x55, 64)];

        InvalidDataException error = Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(corrupt, "https://example.test/corrupt.jpg"));

        error.Message.ShouldContain("https://example.test/corrupt.jpg");
    }

    [Fact]
    public void Decode_StrayBytesBeforeMarker_DecodesLikeTheCleanFile()
    {
        using RgbImage original = TestImages.Noise(48, 40, seed: 10);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 90);
        int sos = jpeg.AsSpan().IndexOf(new byte[] { 0xFF, 0xDA });
        byte[] padded = [.. jpeg[..sos], 0x00, 0x11, 0x22, .. jpeg[sos..]];

        // libjpeg warns "extraneous bytes before marker" and loses nothing; Pillow accepts it too.
        using RgbImage clean = ImageDecoder.Decode(jpeg, "clean.jpg");
        using RgbImage stray = ImageDecoder.Decode(padded, "stray.jpg");

        TestImages.Bytes(stray).ShouldBe(TestImages.Bytes(clean));
    }

    [Fact]
    public void Decode_TruncatedPng_ThrowsNamingSource()
    {
        using RgbImage original = TestImages.Noise(64, 64, seed: 8);
        byte[] png = TestImages.Encode(original, SKEncodedImageFormat.Png);

        InvalidDataException error = Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(png.AsSpan(0, png.Length / 2), "images/cut.png"));

        error.Message.ShouldContain("images/cut.png");
        error.Message.ShouldContain("PNG");
    }

    [Fact]
    public void Decode_CorruptPngHeader_ThrowsNamingSource()
    {
        byte[] png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

        Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(png, "bad.png")).Message.ShouldContain("bad.png");
        Should.Throw<InvalidDataException>(() => ImageDecoder.ReadHeader(png, "bad.png")).Message.ShouldContain("bad.png");
    }

    [Theory]
    [InlineData(new byte[] { })]
    [InlineData(new byte[] { (byte)'G', (byte)'I', (byte)'F', (byte)'8', (byte)'9', (byte)'a' })]
    [InlineData(new byte[] { 0xFF, 0xD8 })]
    public void Decode_UnknownFormat_ThrowsNamingSource(byte[] data)
    {
        InvalidDataException error = Should.Throw<InvalidDataException>(() => ImageDecoder.Decode(data, "member-17.bin"));

        error.Message.ShouldContain("member-17.bin");
        error.Message.ShouldContain("not a JPEG or PNG");
    }

    [Fact]
    public void Decode_ManyThreads_SameResultAsOneThread()
    {
        using RgbImage original = TestImages.Noise(80, 48, seed: 9);
        byte[] jpeg = TestImages.Encode(original, SKEncodedImageFormat.Jpeg, quality: 85);
        using RgbImage expected = ImageDecoder.Decode(jpeg, "t.jpg");
        byte[] expectedBytes = TestImages.Bytes(expected);

        var results = new bool[64];
        Parallel.For(0, results.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            using RgbImage decoded = ImageDecoder.Decode(jpeg, "t.jpg");
            results[i] = decoded.Pixels.SequenceEqual(expectedBytes);
        });

        results.ShouldAllBe(ok => ok);
    }
}
