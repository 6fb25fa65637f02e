using Kiln.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Distributed.Tests;

/// <summary>FusedAdamW against TorchSharp's own AdamW on the same model, data and settings.</summary>
public sealed class FusedAdamWTests
{
    public FusedAdamWTests() => TorchRuntime.EnsureInitialized();

    private static nn.Module<Tensor, Tensor> Model(ScalarType dtype)
    {
        manual_seed(3);
        var model = nn.Sequential(("fc1", nn.Linear(6, 16)), ("act", nn.GELU()), ("norm", nn.LayerNorm(16)), ("fc2", nn.Linear(16, 4)));
        model.to(dtype);
        return model;
    }

    [Theory]
    [InlineData(ScalarType.Float64, 1e-12)]
    [InlineData(ScalarType.Float32, 1e-5)]
    public void TwentySteps_MatchTorchSharpsAdamW(ScalarType dtype, double tolerance)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator(9);
        Tensor x = randn([20, 8, 6], generator: generator).to(dtype);
        Tensor y = randn([20, 8, 4], generator: generator).to(dtype);

        var reference = Model(dtype);
        using var referenceOptimizer = optim.AdamW(reference.parameters(), lr: 0.01, weight_decay: 0.05);
        var fused = Model(dtype);
        using var fusedOptimizer = new FusedAdamW(fused.parameters(), lr: 0.01, weightDecay: 0.05);
        fusedOptimizer.BufferCount.ShouldBe(1);
        for (int step = 0; step < 20; step++)
        {
            using var stepScope = NewDisposeScope();
            referenceOptimizer.zero_grad();
            nn.functional.mse_loss(reference.call(x[step]), y[step]).backward();
            referenceOptimizer.step();
            fusedOptimizer.ZeroGrad();
            nn.functional.mse_loss(fused.call(x[step]), y[step]).backward();
            fusedOptimizer.Step();
        }
        foreach (var ((name, expected), actual) in reference.named_parameters().Zip(fused.parameters()))
        {
            double diff = ((actual - expected).abs() / expected.abs().clamp_min(1.0)).max().to_type(ScalarType.Float64).item<double>();
            diff.ShouldBeLessThanOrEqualTo(tolerance, name);
        }
    }

    [Fact]
    public void Parameters_AndGradients_AreViewsOfOneBuffer_AndKeepTheirValues()
    {
        using var scope = NewDisposeScope();
        var model = Model(ScalarType.Float32);
        Tensor[] before = [.. model.parameters().Select(p => p.detach().clone())];
        using var optimizer = new FusedAdamW(model.parameters(), lr: 0.1);
        foreach (var (p, old) in model.parameters().Zip(before))
        {
            p.eq(old).all().item<bool>().ShouldBeTrue();
        }
        nn.functional.mse_loss(model.call(ones(2, 6)), zeros(2, 4)).backward();
        // Accumulated in place into the flat gradient buffer: a second backward adds to the first.
        Tensor first = model.parameters().First().grad!.clone();
        nn.functional.mse_loss(model.call(ones(2, 6)), zeros(2, 4)).backward();
        model.parameters().First().grad!.allclose(first * 2, rtol: 1e-5, atol: 1e-7).ShouldBeTrue();
        optimizer.ZeroGrad();
        model.parameters().ShouldAllBe(p => p.grad!.abs().sum().item<float>() == 0f);
    }

    [Fact]
    public void ParametersOfTwoDtypes_LiveInTwoBuffers()
    {
        using var scope = NewDisposeScope();
        var a = nn.Linear(3, 3);
        var b = nn.Linear(3, 3);
        b.to(ScalarType.Float64);
        using var optimizer = new FusedAdamW([.. a.parameters(), .. b.parameters()]);
        optimizer.BufferCount.ShouldBe(2);
    }
}
