namespace Kiln.Data.Tests.Remote;

/// <summary>Deterministic test bytes and the repository's root folder.</summary>
internal static class RemoteTestData
{
    /// <summary><paramref name="length"/> bytes from a fixed xorshift sequence: every offset holds a distinct-looking byte, so a shifted or spliced read shows.</summary>
    public static byte[] Bytes(int length, uint seed = 2463534242)
    {
        var bytes = new byte[length];
        uint state = seed == 0 ? 1 : seed;
        for (int i = 0; i < length; i++)
        {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            bytes[i] = (byte)(state >> 24);
        }

        return bytes;
    }

    /// <summary>The folder holding <c>Kiln.slnx</c>, found by walking up from the test binaries (at most 16 levels).</summary>
    public static string RepositoryRoot()
    {
        DirectoryInfo? folder = new(AppContext.BaseDirectory);
        for (int level = 0; level < 16 && folder is not null; level++, folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Kiln.slnx")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException($"No Kiln.slnx above {AppContext.BaseDirectory}: run the tests from a Kiln checkout.");
    }

    /// <summary>Reads <paramref name="stream"/> to its end with reads of <paramref name="bufferSize"/> bytes, blocking or async; bounded by <paramref name="maxBytes"/>.</summary>
    public static async Task<byte[]> ReadAllAsync(Stream stream, bool useAsync, int bufferSize = 81920, long maxBytes = 64L * 1024 * 1024)
    {
        using var collected = new MemoryStream();
        var buffer = new byte[bufferSize];
        while (collected.Length <= maxBytes)
        {
            int read = useAsync ? await stream.ReadAsync(buffer) : stream.Read(buffer, 0, buffer.Length);
            if (read == 0)
            {
                return collected.ToArray();
            }

            collected.Write(buffer, 0, read);
        }

        throw new InvalidOperationException($"The stream gave more than {maxBytes} bytes.");
    }
}
