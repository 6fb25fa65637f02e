namespace Kiln.Runtime.Tests;

public sealed class GemmProbeTests
{
    [Fact]
    public async Task MeasureAsync_OnCpu_CountsMultipliesAndFlops()
    {
        GemmResult result = await GemmProbe.MeasureAsync(DeviceCatalog.Current.Cpu, 64, TimeSpan.FromMilliseconds(50));

        result.Device.ShouldBe("cpu");
        result.DataType.ShouldBe("float32");
        result.Iterations.ShouldBeGreaterThan(0);
        result.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(50));
        result.FlopsPerSecond.ShouldBe(result.Iterations * 2.0 * 64 * 64 * 64 / result.Elapsed.TotalSeconds);
    }

    [Fact]
    public async Task MeasureAsync_Cancelled_StopsWithCancellation()
    {
        using var cancellation = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));

        Task<GemmResult> run = GemmProbe.MeasureAsync(DeviceCatalog.Current.Cpu, 64, TimeSpan.FromMinutes(5), cancellation.Token);

        await Should.ThrowAsync<OperationCanceledException>(run);
    }
}
