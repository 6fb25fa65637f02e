// Rewrites one symbol-version need of a 64-bit little-endian ELF shared library.
//
// libLibTorchSharp.so (TorchSharp 0.107) declares a need for GLIBCXX_3.4.32 only because of
// std::ios_base_library_init, a marker symbol that carries no relocation. Hosts with an older
// libstdc++ (Debian 12, Ubuntu 22.04: GLIBCXX_3.4.30) refuse to load the library for that one
// entry. Pointing the entry at GLIBCXX_3.4.30 (name and hash) lets it load; nothing else changes.
//
// This file is compiled twice: by MSBuild's RoslynCodeTaskFactory as the build task (see
// LibTorchSharpCompat.targets), and into Kiln.Runtime.Tests with KILN_ELF_PATCH_TESTS defined.
#nullable enable
// The usings serve the task build, which has no implicit usings.
#pragma warning disable IDE0005
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;
#if !KILN_ELF_PATCH_TESTS
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
#endif

namespace Kiln.Build;

/// <summary>The outcome of <see cref="ElfVersionNeedPatch.Apply"/>.</summary>
internal enum ElfPatchOutcome
{
    /// <summary>The need was rewritten.</summary>
    Patched,
    /// <summary>The file has no need for the old version (already patched, or never needed).</summary>
    NotNeeded,
}

/// <summary>Reads and rewrites the version needs (.gnu.version_r) of an ELF64 LSB file.</summary>
internal static class ElfVersionNeedPatch
{
    private const uint ShtGnuVerneed = 0x6ffffffe;

    /// <summary>Lists (file, version) for every version need in the image.</summary>
    public static (string File, string Version)[] ReadNeeds(byte[] image)
    {
        var result = new System.Collections.Generic.List<(string, string)>();
        Walk(image, (file, version, _) => result.Add((file, version)));
        return result.ToArray();
    }

    /// <summary>
    /// Rewrites the need of <paramref name="library"/> for <paramref name="from"/> so that it names
    /// <paramref name="to"/> instead. The image is changed in place.
    /// </summary>
    /// <exception cref="InvalidDataException">The image is not an ELF64 LSB file, or has no string for <paramref name="to"/>.</exception>
    public static ElfPatchOutcome Apply(byte[] image, string library, string from, string to)
    {
        int auxOffset = -1;
        uint toNameOffset = uint.MaxValue;
        Walk(image, (file, version, aux) =>
        {
            if (file != library)
            {
                return;
            }
            if (version == from)
            {
                auxOffset = aux;
            }
            else if (version == to)
            {
                toNameOffset = U32(image, aux + 8);
            }
        });
        if (auxOffset < 0)
        {
            return ElfPatchOutcome.NotNeeded;
        }
        if (toNameOffset == uint.MaxValue)
        {
            toNameOffset = FindDynStr(image, to)
                ?? throw new InvalidDataException($"the dynamic string table has no '{to}' to point the need for '{from}' at");
        }
        PutU32(image, auxOffset, ElfHash(to));
        PutU32(image, auxOffset + 8, toNameOffset);
        return ElfPatchOutcome.Patched;
    }

    /// <summary>The System V ELF hash that .gnu.version_r stores beside each version name.</summary>
    public static uint ElfHash(string name)
    {
        uint h = 0;
        foreach (byte c in Encoding.ASCII.GetBytes(name))
        {
            h = (h << 4) + c;
            uint g = h & 0xf0000000;
            if (g != 0)
            {
                h ^= g >> 24;
            }
            h &= ~g;
        }
        return h;
    }

    private static (int Offset, int Size) VerneedSection(byte[] image, out int dynStrOffset, out int count)
    {
        if (image.Length < 64 || image[0] != 0x7f || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
        {
            throw new InvalidDataException("not an ELF file");
        }
        if (image[4] != 2 || image[5] != 1)
        {
            throw new InvalidDataException("not a 64-bit little-endian ELF file");
        }
        long shoff = I64(image, 0x28);
        int shentsize = U16(image, 0x3A);
        int shnum = U16(image, 0x3C);
        for (int i = 0; i < shnum; i++)
        {
            int sh = checked((int)(shoff + (long)i * shentsize));
            if (U32(image, sh + 4) != ShtGnuVerneed)
            {
                continue;
            }
            int offset = checked((int)I64(image, sh + 0x18));
            int size = checked((int)I64(image, sh + 0x20));
            int link = (int)U32(image, sh + 0x28);
            count = (int)U32(image, sh + 0x2C);
            int strSh = checked((int)(shoff + (long)link * shentsize));
            dynStrOffset = checked((int)I64(image, strSh + 0x18));
            return (offset, size);
        }
        dynStrOffset = 0;
        count = 0;
        return (0, 0);
    }

    private static void Walk(byte[] image, Action<string, string, int> visit)
    {
        var (offset, _) = VerneedSection(image, out int dynStr, out int count);
        int vn = offset;
        for (int i = 0; i < count; i++)
        {
            int cnt = U16(image, vn + 2);
            string file = ReadString(image, dynStr + (int)U32(image, vn + 4));
            int aux = vn + (int)U32(image, vn + 8);
            for (int j = 0; j < cnt; j++)
            {
                string version = ReadString(image, dynStr + (int)U32(image, aux + 8));
                visit(file, version, aux);
                aux += (int)U32(image, aux + 12);
            }
            vn += (int)U32(image, vn + 12);
        }
    }

    private static uint? FindDynStr(byte[] image, string value)
    {
        VerneedSection(image, out int dynStr, out _);
        byte[] needle = Encoding.ASCII.GetBytes("\0" + value + "\0");
        int at = IndexOf(image, needle, dynStr);
        return at < 0 ? null : (uint)(at - dynStr + 1);
    }

    private static int IndexOf(byte[] haystack, byte[] needle, int start)
    {
        for (int i = start; i <= haystack.Length - needle.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && haystack[i + j] == needle[j])
            {
                j++;
            }
            if (j == needle.Length)
            {
                return i;
            }
        }
        return -1;
    }

    // ELF64 LSB fields, read and written on a little-endian host (x86-64, arm64).
    private static uint U32(byte[] image, int offset) => BitConverter.ToUInt32(image, offset);

    private static int U16(byte[] image, int offset) => BitConverter.ToUInt16(image, offset);

    private static long I64(byte[] image, int offset) => BitConverter.ToInt64(image, offset);

    private static void PutU32(byte[] image, int offset, uint value) => Array.Copy(BitConverter.GetBytes(value), 0, image, offset, 4);

    private static string ReadString(byte[] image, int offset)
    {
        int end = Array.IndexOf(image, (byte)0, offset);
        return Encoding.ASCII.GetString(image, offset, end - offset);
    }

    /// <summary>True when the file contains the NUL-terminated version string (a libstdc++ defines it).</summary>
    public static bool FileDefinesVersion(string path, string version)
    {
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        return IndexOf(File.ReadAllBytes(path), needle, 0) >= 0;
    }
}

#if !KILN_ELF_PATCH_TESTS
/// <summary>
/// MSBuild task: patches every libLibTorchSharp.so under <see cref="Directory"/> when this host's
/// libstdc++ lacks <see cref="FromVersion"/> (or when <see cref="Mode"/> is "always").
/// </summary>
public sealed class PatchLibTorchSharpVersionNeed : Task
{
    private static readonly string[] s_libStdCxxCandidates =
    {
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib64/libstdc++.so.6",
        "/lib64/libstdc++.so.6",
        "/usr/lib/libstdc++.so.6",
    };

    [Required]
    public string Directory { get; set; } = "";

    public string Mode { get; set; } = "auto";

    public string FromVersion { get; set; } = "GLIBCXX_3.4.32";

    public string ToVersion { get; set; } = "GLIBCXX_3.4.30";

    public override bool Execute()
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || Mode == "never" || !System.IO.Directory.Exists(Directory))
        {
            return true;
        }
        var targets = new[]
        {
            Path.Combine(Directory, "libLibTorchSharp.so"),
            Path.Combine(Directory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
        };
        if (Mode != "always")
        {
            string? libstdcxx = Array.Find(s_libStdCxxCandidates, File.Exists);
            if (libstdcxx != null && ElfVersionNeedPatch.FileDefinesVersion(libstdcxx, FromVersion))
            {
                return true;
            }
        }
        foreach (string target in targets)
        {
            if (!File.Exists(target))
            {
                continue;
            }
            try
            {
                byte[] image = File.ReadAllBytes(target);
                if (ElfVersionNeedPatch.Apply(image, "libstdc++.so.6", FromVersion, ToVersion) != ElfPatchOutcome.Patched)
                {
                    continue;
                }
                // Write a new file and move it over the old one: the copy in the output folder may be a
                // hard link into the NuGet cache, which must never change. The timestamp is kept so that
                // incremental builds see the copy as up to date and do not copy the original back.
                DateTime stamp = File.GetLastWriteTimeUtc(target);
                string temp = target + ".kiln-patch";
                File.WriteAllBytes(temp, image);
                File.SetLastWriteTimeUtc(temp, stamp);
                File.Delete(target);
                File.Move(temp, target);
                Log.LogMessage(MessageImportance.Normal,
                    $"Kiln: {target}: version need {FromVersion} rewritten to {ToVersion} (this host's libstdc++ lacks {FromVersion}).");
            }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                Log.LogError($"Kiln: cannot patch {target} for this host's libstdc++: {ex.Message}");
                return false;
            }
        }
        return true;
    }
}
#endif
