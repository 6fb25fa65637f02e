using System.Formats.Tar;
using System.Text;
using Kiln.Data.Imaging;
using Kiln.Data.Nodes;
using Kiln.Data.Tests.Imaging;
using SkiaSharp;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

/// <summary>WebDataset JPEG shards → image node → batch → collate, as a spec.</summary>
public sealed class ImagePipelineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-images-").FullName;

    private DataGraph Graph(int threads, string onError = "fail") => Build("tensors",
        Node("files", "files", parameters: new() { ["root"] = _dir, ["patterns"] = "*.tar" }),
        Node("samples", "webdataset", ["files"]),
        Node("images", "image", ["samples"], new() { ["size"] = 32, ["flip"] = true, ["threads"] = threads, ["on_error"] = onError }),
        Node("batches", "batch", ["images"], new() { ["size"] = 4 }),
        Node("tensors", "collate", ["batches"]));

    [Fact]
    public void Pipeline_YieldsNormalizedImageTensorsAndLabels()
    {
        WriteShard("a.tar", 0, 6);

        using var loader = new DataLoader<TensorBatch>(Graph(threads: 2));
        loader.TryNext(out TensorBatch first).ShouldBeTrue();
        using (first)
        {
            first.Inputs.shape.ShouldBe([4L, 3, 32, 32]);
            first.Inputs.dtype.ShouldBe(TorchSharp.torch.ScalarType.Float32);
            first.Labels!.data<long>().ToArray().ShouldBe([0L, 1, 2, 3]);
            // ImageNet normalization of 0..255 pixels stays within [-2.2, 2.7].
            first.Inputs.min().item<float>().ShouldBeGreaterThanOrEqualTo(-2.2f);
            first.Inputs.max().item<float>().ShouldBeLessThanOrEqualTo(2.7f);
        }
        loader.TryNext(out TensorBatch second).ShouldBeTrue();
        using (second)
        {
            second.Inputs.shape[0].ShouldBe(2);
        }
    }

    [Fact]
    public void Augmentation_DependsOnSeedAndSample_NotOnThreads()
    {
        WriteShard("a.tar", 0, 8);

        string[] sequential = Hashes(Graph(threads: 0), seed: 1);
        string[] parallel = Hashes(Graph(threads: 3), seed: 1);
        string[] otherSeed = Hashes(Graph(threads: 3), seed: 2);

        parallel.ShouldBe(sequential);
        otherSeed.ShouldNotBe(sequential);
    }

    [Fact]
    public void CorruptJpeg_FailsNamingTheSample_OrIsSkippedAndCounted()
    {
        WriteShard("a.tar", 0, 4, corrupt: 2);

        DataPipelineException ex = Should.Throw<DataPipelineException>(() => Hashes(Graph(threads: 2), seed: 1));
        ex.Message.ShouldContain("node 'images' (image): " + Path.Combine(_dir, "a.tar") + ":000002");

        using var loader = new DataLoader<TensorBatch>(Graph(threads: 2, onError: "skip"));
        loader.TryNext(out TensorBatch batch).ShouldBeTrue();
        using (batch)
        {
            batch.Labels!.data<long>().ToArray().ShouldBe([0L, 1, 3]);
        }
        GraphReport.Nodes(loader.Roots[0]).Single(n => n.Id == "images").Stats.Skipped.ShouldBe(1);
    }

    private static string[] Hashes(DataGraph graph, ulong seed)
    {
        using var loader = new DataLoader<TensorBatch>(graph, new DataLoaderOptions { Seed = seed });
        var hashes = new List<string>();
        while (loader.TryNext(out TensorBatch batch))
        {
            using (batch)
            {
                hashes.Add(ItemJson.From(batch)!["inputs"]!["sha256"]!.GetValue<string>());
            }
        }
        return [.. hashes];
    }

    private void WriteShard(string name, int first, int count, int corrupt = -1)
    {
        using FileStream file = File.Create(Path.Combine(_dir, name));
        using var tar = new TarWriter(file, TarEntryFormat.Ustar);
        for (int i = first; i < first + count; i++)
        {
            byte[] jpeg;
            using (RgbImage image = TestImages.Noise(64 + (8 * i), 48, seed: i))
            {
                jpeg = TestImages.Encode(image, SKEncodedImageFormat.Jpeg, 90);
            }
            if (i == corrupt)
            {
                jpeg = jpeg[..(jpeg.Length / 3)];
            }
            tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, $"{i:D6}.jpg") { DataStream = new MemoryStream(jpeg) });
            tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, $"{i:D6}.cls") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes($"{i}")) });
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
