namespace Kiln.Runtime.Tests;

public sealed class DeviceCatalogTests
{
    [Fact]
    public void Current_OnThisHost_HasTheCpuWithItsCoresAndMemory()
    {
        DeviceCatalog sut = DeviceCatalog.Current;

        sut.Cpu.Kind.ShouldBe(DeviceKind.Cpu);
        sut.Cpu.TorchName.ShouldBe("cpu");
        sut.CpuCores.ShouldBe(Environment.ProcessorCount);
        sut.Cpu.MemoryBytes.ShouldBeGreaterThan(1L << 30);
        sut.All.First().ShouldBe(sut.Cpu);
    }

    [Fact]
    public void Current_WithoutNvidiaDriver_HasNoGpuAndSaysWhy()
    {
        DeviceCatalog sut = DeviceCatalog.Current;

        sut.Gpus.ShouldBeEmpty();
        sut.CudaDriver.IsAvailable.ShouldBeFalse();
        sut.CudaDriver.ToString().ShouldContain("libcuda.so.1");
    }

    [Fact]
    public void TorchName_OfAGpu_IsCudaOrdinal() =>
        new ComputeDevice(DeviceKind.Cuda, 3, "H100", 80L << 30).TorchName.ShouldBe("cuda:3");
}
