using Kiln.Data.Imaging;

namespace Kiln.Data.Tests.Imaging;

public sealed class RandomResizedCropTests
{
    [Fact]
    public void SampleWindow_SameSeed_SameWindow()
    {
        var transform = new RandomResizedCrop(224, 224);

        for (long index = 0; index < 50; index++)
        {
            SampleRandom first = SampleRandom.ForSample(42, index);
            SampleRandom second = SampleRandom.ForSample(42, index);
            transform.SampleWindow(500, 375, ref first).ShouldBe(transform.SampleWindow(500, 375, ref second));
        }
    }

    [Fact]
    public void SampleWindow_DifferentSeeds_SpreadOverPositionsAndSizes()
    {
        var transform = new RandomResizedCrop(224, 224);

        CropBox[] windows = Enumerable.Range(0, 500).Select(i =>
        {
            SampleRandom random = SampleRandom.ForSample(7, i);
            return transform.SampleWindow(500, 375, ref random);
        }).ToArray();

        windows.Distinct().Count().ShouldBeGreaterThan(490);
        windows.Min(w => w.X).ShouldBeLessThan(10);
        windows.Max(w => w.X + w.Width).ShouldBeGreaterThan(490);
        windows.Min(w => (double)w.Width * w.Height).ShouldBeLessThan(0.12 * 500 * 375);
        windows.Max(w => (double)w.Width * w.Height).ShouldBeGreaterThan(0.9 * 500 * 375);
    }

    [Theory]
    [InlineData(500, 375)]
    [InlineData(333, 500)]
    [InlineData(64, 64)]
    public void SampleWindow_ManySeeds_WithinScaleAndRatioBoundsAndInsideImage(int width, int height)
    {
        var transform = new RandomResizedCrop(224, 224);
        double area = (double)width * height;

        for (long index = 0; index < 3000; index++)
        {
            SampleRandom random = SampleRandom.ForSample(1234, index);
            CropBox window = transform.SampleWindow(width, height, ref random);

            window.FitsIn(width, height).ShouldBeTrue(window.ToString());
            // w and h are rounded, so each may be off by half a pixel from the drawn area and ratio.
            double scaleSlack = ((window.Width + window.Height) * 0.5 + 0.25) / area;
            (window.Width * window.Height / area).ShouldBeInRange(0.08 - scaleSlack, 1.0 + scaleSlack, window.ToString());
            double ratio = (double)window.Width / window.Height;
            double ratioSlack = ratio * ((0.5 / window.Width) + (0.5 / window.Height)) * 1.01;
            ratio.ShouldBeInRange((3.0 / 4.0) - ratioSlack, (4.0 / 3.0) + ratioSlack, window.ToString());
        }
    }

    [Fact]
    public void SampleWindow_ImpossibleAspect_FallsBackToCentralCropAtMaxRatio()
    {
        var transform = new RandomResizedCrop(224, 224);
        SampleRandom random = SampleRandom.ForSample(3, 0);

        // A 1000x10 strip: no window of area >= 8% with ratio <= 4/3 fits, so all ten attempts fail.
        CropBox window = transform.SampleWindow(1000, 10, ref random);

        window.ShouldBe(new CropBox((1000 - 13) / 2, 0, 13, 10));
    }

    [Fact]
    public void SampleWindow_TallStrip_FallsBackToMinRatio()
    {
        var transform = new RandomResizedCrop(224, 224);
        SampleRandom random = SampleRandom.ForSample(3, 0);

        CropBox window = transform.SampleWindow(9, 2000, ref random);

        // h = round(9 / (3/4)) = 12, centred vertically.
        window.ShouldBe(new CropBox(0, (2000 - 12) / 2, 9, 12));
    }

    [Fact]
    public void SampleWindow_FullScaleAndSquareRatio_IsWholeSquareImage()
    {
        var transform = new RandomResizedCrop(8, 8, 1.0, 1.0, 1.0, 1.0);
        SampleRandom random = new(99);

        transform.SampleWindow(100, 100, ref random).ShouldBe(new CropBox(0, 0, 100, 100));
    }

    [Fact]
    public void Apply_SameSeed_SamePixelsAndOutputSize()
    {
        using RgbImage image = TestImages.Noise(200, 150, seed: 21);
        var transform = new RandomResizedCrop(56, 48);
        SampleRandom a = SampleRandom.ForSample(5, 17), b = SampleRandom.ForSample(5, 17), c = SampleRandom.ForSample(5, 18);

        using RgbImage first = transform.Apply(image, ref a, flip: true);
        using RgbImage second = transform.Apply(image, ref b, flip: true);
        using RgbImage other = transform.Apply(image, ref c, flip: true);

        first.Width.ShouldBe(56);
        first.Height.ShouldBe(48);
        TestImages.Bytes(first).ShouldBe(TestImages.Bytes(second));
        TestImages.Bytes(first).ShouldNotBe(TestImages.Bytes(other));
    }

    [Fact]
    public void Apply_CropsTheSampledWindow()
    {
        using RgbImage image = TestImages.Noise(120, 90, seed: 22);
        var transform = new RandomResizedCrop(32, 32);
        SampleRandom forWindow = SampleRandom.ForSample(8, 3), forApply = SampleRandom.ForSample(8, 3);

        CropBox window = transform.SampleWindow(120, 90, ref forWindow);
        using RgbImage applied = transform.Apply(image, ref forApply);
        using RgbImage expected = ImageTransforms.ResizedCrop(image, window, 32, 32);

        TestImages.Bytes(applied).ShouldBe(TestImages.Bytes(expected));
    }

    [Fact]
    public void Constructor_BadRanges_Throw()
    {
        Should.Throw<ArgumentOutOfRangeException>(() => new RandomResizedCrop(224, 224, 0.5, 0.1, 0.75, 1.33));
        Should.Throw<ArgumentOutOfRangeException>(() => new RandomResizedCrop(224, 224, 0.08, 1, 0, 1.33));
        Should.Throw<ArgumentOutOfRangeException>(() => new RandomResizedCrop(0, 224));
    }
}
