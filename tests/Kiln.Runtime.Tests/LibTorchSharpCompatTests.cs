using System.Reflection;
using Kiln.Build;

namespace Kiln.Runtime.Tests;

/// <summary>The build step that lets libLibTorchSharp.so load where libstdc++ lacks GLIBCXX_3.4.32.</summary>
public sealed class LibTorchSharpCompatTests
{
    private const string Needed = "GLIBCXX_3.4.32";
    private const string Replacement = "GLIBCXX_3.4.30";

    private static readonly string s_original = Path.Combine(
        typeof(LibTorchSharpCompatTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "NuGetPackageRoot").Value!,
        "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");

    private static readonly string s_output = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");

    [Fact]
    public void Apply_ToTorchSharpsLibrary_RewritesOnlyTheOneNeed()
    {
        byte[] image = File.ReadAllBytes(s_original);
        (string File, string Version)[] before = ElfVersionNeedPatch.ReadNeeds(image);
        before.ShouldContain(("libstdc++.so.6", Needed));

        ElfVersionNeedPatch.Apply(image, "libstdc++.so.6", Needed, Replacement).ShouldBe(ElfPatchOutcome.Patched);

        (string File, string Version)[] after = ElfVersionNeedPatch.ReadNeeds(image);
        after.Length.ShouldBe(before.Length);
        after.ShouldNotContain(n => n.Version == Needed);
        after.Count(n => n == ("libstdc++.so.6", Replacement)).ShouldBe(2);
        // Every other need is untouched, in order.
        after.Where((n, i) => n != before[i]).ShouldBe([("libstdc++.so.6", Replacement)]);
        ElfVersionNeedPatch.Apply(image, "libstdc++.so.6", Needed, Replacement).ShouldBe(ElfPatchOutcome.NotNeeded);
    }

    [Fact]
    public void ElfHash_MatchesTheHashTheLinkerStoredForEveryNeed()
    {
        byte[] image = File.ReadAllBytes(s_original);

        // Rewriting a need onto itself stores ElfHash(name); the bytes must not change if the hash is right.
        foreach ((string file, string version) in ElfVersionNeedPatch.ReadNeeds(image).Where(n => n.Version != Needed))
        {
            byte[] copy = (byte[])image.Clone();
            ElfVersionNeedPatch.Apply(copy, file, version, version);
            copy.SequenceEqual(image).ShouldBeTrue($"hash of {version}");
        }
    }

    [Fact]
    public void Build_PatchedTheOutputCopyOnlyWhereTheHostNeedsIt_AndNeverTheNuGetCache()
    {
        bool hostHasVersion = ElfVersionNeedPatch.FileDefinesVersion(HostLibStdCxx(), Needed);
        bool outputNeedsIt = ElfVersionNeedPatch.ReadNeeds(File.ReadAllBytes(s_output)).Any(n => n.Version == Needed);

        outputNeedsIt.ShouldBe(hostHasVersion);
        ElfVersionNeedPatch.ReadNeeds(File.ReadAllBytes(s_original)).ShouldContain(n => n.Version == Needed);
        new FileInfo(s_output).Length.ShouldBe(new FileInfo(s_original).Length);
    }

    [Fact]
    public void Apply_ToSomethingElse_SaysItIsNotElf()
    {
        Should.Throw<InvalidDataException>(() => ElfVersionNeedPatch.Apply(new byte[128], "libstdc++.so.6", Needed, Replacement))
            .Message.ShouldContain("not an ELF file");
    }

    private static string HostLibStdCxx() =>
        new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }.First(File.Exists);
}
