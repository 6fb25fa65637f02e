using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Runtime.Tests;

/// <summary>Opens ResNet-18 and its preprocessing graph (shipped in Microsoft.ML.DnnImageFeaturizer.ResNet18).</summary>
public sealed class OnnxSessionFactoryTests
{
    private static readonly string s_models = Path.Combine(AppContext.BaseDirectory, "DnnImageModels");
    private static readonly string s_preprocess = Path.Combine(s_models, "ResNetPrepOnnx", "ResNetPreprocess.onnx");
    private static readonly string s_resnet = Path.Combine(s_models, "ResNet18Onnx", "ResNet18.onnx");

    [Fact]
    public void Preprocess_SubtractsOneFixedMeanImage()
    {
        using InferenceSession sut = OnnxSessionFactory.Open(s_preprocess, new OnnxSessionOptions { IntraOpThreads = 1 });
        DenseTensor<float> image = RandomImage(seed: 1);

        float[] ofImage = Run(sut, "OriginalInput", image);
        float[] ofBlack = Run(sut, "OriginalInput", new DenseTensor<float>([1, 3, 224, 224]));

        ofImage.Length.ShouldBe(3 * 224 * 224);
        // The graph swaps RGB to BGR and subtracts a mean image: the mean is what a black image gives, negated.
        const int Plane = 224 * 224;
        for (int i = 0; i < ofImage.Length; i++)
        {
            int channel = i / Plane;
            (ofImage[i] - ofBlack[i]).ShouldBe(image.Buffer.Span[((2 - channel) * Plane) + (i % Plane)], 1e-3f);
        }
        ofBlack.Min().ShouldBeLessThan(-50f);
    }

    [Fact]
    public void ResNet18_OnTwoImages_GivesDistinctNonNegativeRepeatableFeatures()
    {
        using InferenceSession sut = OnnxSessionFactory.Open(s_resnet, new OnnxSessionOptions { IntraOpThreads = 2 });
        sut.OutputMetadata.Single().Value.Dimensions.ShouldBe([1, 512, 1, 1]);

        float[] first = Run(sut, "Input247", RandomImage(seed: 1));
        float[] again = Run(sut, "Input247", RandomImage(seed: 1));
        float[] second = Run(sut, "Input247", RandomImage(seed: 2, stripes: true));

        first.Length.ShouldBe(512);
        first.ShouldAllBe(v => float.IsFinite(v) && v >= 0f); // average pooling of ReLU outputs
        first.ShouldBe(again);
        first.Count(v => v > 0f).ShouldBeGreaterThan(100);
        Cosine(first, second).ShouldBeLessThan(0.99);
    }

    [Fact]
    public void Open_MissingFile_NamesTheFile()
    {
        string missing = Path.Combine(s_models, "nope.onnx");

        FileNotFoundException ex = Should.Throw<FileNotFoundException>(() => OnnxSessionFactory.Open(missing));

        ex.Message.ShouldContain(missing);
    }

    [Fact]
    public void Open_NotAModel_SaysOnnxRuntimeRejectsIt()
    {
        KilnRuntimeException ex = Should.Throw<KilnRuntimeException>(() => OnnxSessionFactory.Open([1, 2, 3, 4]));

        ex.Message.ShouldContain("ONNX Runtime cannot open");
    }

    [Fact]
    public void Open_CudaOnTheCpuBuild_NamesTheMissingProvider_UnlessFallbackAllowed()
    {
        OnnxSessionFactory.AvailableProviders.ShouldContain("CPUExecutionProvider");

        KilnRuntimeException ex = Should.Throw<KilnRuntimeException>(
            () => OnnxSessionFactory.Open(s_preprocess, new OnnxSessionOptions { Provider = OnnxProvider.Cuda }));
        ex.Message.ShouldContain("CUDAExecutionProvider");

        using InferenceSession fallback = OnnxSessionFactory.Open(s_preprocess, new OnnxSessionOptions { Provider = OnnxProvider.Cuda, FallBackToCpu = true });
        fallback.InputMetadata.Keys.ShouldBe(["OriginalInput"]);
    }

    private static float[] Run(InferenceSession session, string input, DenseTensor<float> tensor)
    {
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results =
            session.Run([NamedOnnxValue.CreateFromTensor(input, tensor)]);
        return results.Single().AsTensor<float>().ToArray();
    }

    private static DenseTensor<float> RandomImage(int seed, bool stripes = false)
    {
        var random = new Random(seed);
        var image = new DenseTensor<float>([1, 3, 224, 224]);
        Span<float> pixels = image.Buffer.Span;
        for (int i = 0; i < pixels.Length; i++)
        {
            int column = i % 224;
            pixels[i] = stripes ? (column / 16 % 2 == 0 ? 230f : 20f) : (float)(random.NextDouble() * 255);
        }
        return image;
    }

    private static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += a[i] * b[i];
            na += a[i] * a[i];
            nb += b[i] * b[i];
        }
        return dot / Math.Sqrt(na * nb);
    }
}
