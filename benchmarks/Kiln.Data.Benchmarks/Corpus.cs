using System.Formats.Tar;

namespace Kiln.Data.Benchmarks;

/// <summary>The benchmark corpus: WebDataset tar shards of NNNNNN.jpg (+ NNNNNN.cls), made by benchmarks/data/make-corpus.sh.</summary>
internal static class Corpus
{
    public static string[] Shards(string folder)
    {
        if (!Directory.Exists(folder))
        {
            throw new DirectoryNotFoundException($"Corpus folder {folder} does not exist: run benchmarks/data/make-corpus.sh {folder}");
        }
        string[] shards = [.. Directory.GetFiles(folder, "*.tar").Order(StringComparer.Ordinal)];
        if (shards.Length == 0)
        {
            throw new FileNotFoundException($"No *.tar in {folder}: run benchmarks/data/make-corpus.sh {folder}");
        }
        return shards;
    }

    /// <summary>Every image's bytes, in shard order, with its tar member name.</summary>
    public static List<(string Name, byte[] Data)> LoadImages(string folder, string extension = ".jpg")
    {
        var images = new List<(string, byte[])>();
        foreach (string shard in Shards(folder))
        {
            using FileStream stream = File.OpenRead(shard);
            using var reader = new TarReader(stream);
            while (reader.GetNextEntry() is { } entry)
            {
                if (entry.DataStream is null || !entry.Name.EndsWith(extension, StringComparison.Ordinal))
                {
                    continue;
                }
                var data = new byte[entry.Length];
                entry.DataStream.ReadExactly(data);
                images.Add(($"{Path.GetFileName(shard)}:{entry.Name}", data));
            }
        }
        return images;
    }
}
