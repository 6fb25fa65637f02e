namespace Kiln.Runtime.Tests;

public sealed class TorchRuntimeTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("kiln-torch-").FullName;

    [Fact]
    public void VersionOf_PyTorchInstall_ReadsTorchVersionPy()
    {
        string lib = Directory.CreateDirectory(Path.Combine(_root, "torch", "lib")).FullName;
        File.WriteAllText(Path.Combine(_root, "torch", "version.py"), "from typing import Optional\n__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\n");

        TorchRuntime.VersionOf(Path.Combine(lib, "libtorch_cpu.so")).ShouldBe("2.11.0+cu130");
    }

    [Fact]
    public void VersionOf_LibTorchDistribution_ReadsBuildVersion()
    {
        string lib = Directory.CreateDirectory(Path.Combine(_root, "libtorch", "lib")).FullName;
        File.WriteAllText(Path.Combine(_root, "libtorch", "build-version"), "2.10.0+cpu\n");

        TorchRuntime.VersionOf(Path.Combine(lib, "libtorch_cpu.so")).ShouldBe("2.10.0+cpu");
    }

    [Fact]
    public void FindPythonLibTorch_WithoutPythonOrTorch_IsNull()
    {
        TorchRuntime.FindPythonLibTorch(Path.Combine(_root, "no-such-python")).ShouldBeNull();
        TorchRuntime.FindPythonLibTorch("false").ShouldBeNull();
    }

    [Fact]
    public void FindPythonLibTorch_TakesTheFolderPythonPrints_WhenItHoldsLibTorch()
    {
        string lib = Directory.CreateDirectory(Path.Combine(_root, "torch", "lib")).FullName;
        File.WriteAllBytes(Path.Combine(lib, "libtorch_cpu.so"), []);
        string fakePython = Path.Combine(_root, "python3");
        File.WriteAllText(fakePython, $"#!/bin/sh\necho '{lib}'\n");
        File.SetUnixFileMode(fakePython, UnixFileMode.UserRead | UnixFileMode.UserExecute);

        TorchRuntime.FindPythonLibTorch(fakePython).ShouldBe(lib);
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}
