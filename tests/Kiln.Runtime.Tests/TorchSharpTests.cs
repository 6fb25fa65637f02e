using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Runtime.Tests;

public sealed class TorchSharpTests
{
    public TorchSharpTests() => TorchRuntime.EnsureInitialized();

    [Fact]
    public void Matmul_OfKnownMatrices_GivesTheirProduct()
    {
        using DisposeScope scope = torch.NewDisposeScope();
        Tensor a = torch.tensor(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        Tensor b = torch.tensor(new float[] { 7, 8, 9, 10, 11, 12 }, 3, 2);

        float[] product = a.matmul(b).data<float>().ToArray();

        product.ShouldBe([58f, 64f, 139f, 154f]);
    }

    [Fact]
    public void Backward_ThroughMatmulAndSquare_GivesTheAnalyticGradient()
    {
        using DisposeScope scope = torch.NewDisposeScope();
        // loss = sum((A x)^2)  =>  d loss / d x = 2 Aᵀ (A x)
        Tensor a = torch.tensor(new float[] { 1, 2, 3, 4, 5, 6 }, 3, 2);
        Tensor x = torch.tensor(new float[] { 0.5f, -1f }, 2, 1).requires_grad_();

        Tensor loss = a.matmul(x).pow(2).sum();
        loss.backward();

        // A x = [-1.5, -2.5, -3.5]; 2 Aᵀ (A x) = [2(-1.5 - 7.5 - 17.5), 2(-3 - 10 - 21)] = [-53, -68]
        loss.item<float>().ShouldBe(1.5f * 1.5f + 2.5f * 2.5f + 3.5f * 3.5f, 1e-5f);
        x.grad.ShouldNotBeNull().data<float>().ToArray().ShouldBe([-53f, -68f]);
    }

    [Fact]
    public void EnsureInitialized_OnThisHost_LoadsTheBundledCpuLibTorch210()
    {
        LibTorchInfo info = TorchRuntime.EnsureInitialized();

        info.Source.ShouldBe(LibTorchSource.Bundled);
        info.Version.ShouldBe("2.10.0");
        info.Path.ShouldEndWith("libtorch_cpu.so");
        File.Exists(info.Path).ShouldBeTrue();
        info.CudaAvailable.ShouldBeFalse();
    }
}
