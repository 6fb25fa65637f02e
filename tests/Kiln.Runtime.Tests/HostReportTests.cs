using Kiln.Runtime.Native;

namespace Kiln.Runtime.Tests;

public sealed class HostReportTests
{
    private static readonly HostFact[] s_facts = HostReport.Collect(new TorchRuntimeOptions()).ToArray();

    [Fact]
    public void Collect_ReportsEveryFactDoctorPromises_InOrder()
    {
        string[] names = s_facts.Select(f => f.Name).Distinct().ToArray();

        names.ShouldBe([".NET runtime", "kiln", "os", "cpu", "memory", "torchsharp", "libtorch", "libtorch cuda", "cuda driver", "device", "onnxruntime", "mpi", "nccl"]);
        Fact("kiln").ShouldBe("0.1.0");
        Fact("torchsharp").ShouldBe("0.107.0");
        Fact("cpu").ShouldEndWith($"{Environment.ProcessorCount} cores");
        Fact(".NET runtime").ShouldStartWith(".NET 10.");
    }

    [Fact]
    public void Collect_OnThisCpuHost_ShowsTheBundledLibTorchAndNoGpu()
    {
        Fact("libtorch").ShouldStartWith("2.10.0, CPU build, bundled (");
        Fact("libtorch").ShouldEndWith("libtorch_cpu.so)");
        Fact("libtorch cuda").ShouldBe("no (CPU host)");
        Fact("cuda driver").ShouldStartWith("not found (libcuda.so.1");
        s_facts.Where(f => f.Name == "device").ShouldHaveSingleItem().Value.ShouldStartWith("cpu ");
        Fact("onnxruntime").ShouldBe("1.31.1 (CPUExecutionProvider)");
    }

    [Fact]
    public void Collect_FindsOpenMpi_InstalledByTheTestScript()
    {
        HostFact mpi = s_facts.Single(f => f.Name == "mpi");

        mpi.Available.ShouldBeTrue(mpi.Value);
        mpi.Value.ShouldStartWith("Open MPI v4.1");
        mpi.Value.ShouldContain("MPI 3.1 (/");
    }

    [Fact]
    public void Collect_WithoutNccl_SaysSoPlainly()
    {
        HostFact nccl = s_facts.Single(f => f.Name == "nccl");

        nccl.Available.ShouldBeFalse();
        nccl.Value.ShouldBe("not found (libnccl.so.2 is not on the loader path)");
        NcclProbe.Probe("/nonexistent").ToString().ShouldBe("not found (no loadable libnccl.so.2 in /nonexistent or on the loader path)");
    }

    [Theory]
    [InlineData(22803, "2.28.3")]
    [InlineData(21903, "2.19.3")]
    [InlineData(2804, "2.8.4")]
    public void NcclVersionCode_IsDecodedLikeNcclDoes(int code, string expected) =>
        NcclProbe.FormatVersion(code).ShouldBe(expected);

    private static string Fact(string name) => s_facts.First(f => f.Name == name).Value;
}
