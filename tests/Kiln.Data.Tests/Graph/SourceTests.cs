using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using Kiln.Data.Nodes;
using static Kiln.Data.Tests.Graph.TestGraphs;

namespace Kiln.Data.Tests.Graph;

public sealed class SourceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kiln-data-").FullName;

    private JsonObject Files(string pattern, bool recursive = false) =>
        Node("files", "files", parameters: new() { ["root"] = _dir, ["patterns"] = pattern, ["recursive"] = recursive });

    [Fact]
    public void Files_MatchGlobsRecursively_Sorted()
    {
        foreach (string f in new[] { "b.txt", "a.txt", "x.csv", "sub/c.txt", "sub/deep/d.txt" })
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(_dir, f))!);
            File.WriteAllText(Path.Combine(_dir, f), f);
        }

        ReadAll<string>(Build("files", Files("*.txt"))).Select(p => Path.GetRelativePath(_dir, p)).ShouldBe(["a.txt", "b.txt"]);
        ReadAll<string>(Build("files", Files("**/*.txt"))).Select(p => Path.GetRelativePath(_dir, p)).ShouldBe(["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt"]);
        ReadAll<string>(Build("files", Files("sub/*.txt"))).Select(p => Path.GetRelativePath(_dir, p)).ShouldBe(["sub/c.txt"]);
    }

    [Fact]
    public void LinesCsvJsonl_ReadTheirRecords()
    {
        File.WriteAllText(Path.Combine(_dir, "a.txt"), "one\ntwo\r\nthree");
        File.WriteAllText(Path.Combine(_dir, "a.csv"), "name,note\nada,\"says \"\"hi\"\", twice\"\nbob,\"two\nlines\"\n");
        File.WriteAllText(Path.Combine(_dir, "a.jsonl"), "{\"x\":1}\n\n{\"x\":2}\n");

        ReadAll<string>(Build("l", Files("*.txt"), Node("l", "lines", ["files"]))).ShouldBe(["one", "two", "three"]);
        List<IReadOnlyDictionary<string, string>> rows = ReadAll<IReadOnlyDictionary<string, string>>(Build("c", Files("*.csv"), Node("c", "csv", ["files"])));
        rows.Select(r => r["note"]).ShouldBe(["says \"hi\", twice", "two\nlines"]);
        ReadAll<JsonNode>(Build("j", Files("*.jsonl"), Node("j", "jsonl", ["files"]))).Select(n => n["x"]!.GetValue<int>()).ShouldBe([1, 2]);
    }

    [Fact]
    public void TarTgzZipGzip_StreamTheirMembers()
    {
        WriteTar("a.tar", 3, gzip: false);
        WriteTar("b.tar.gz", 2, gzip: true);
        using (ZipArchive zip = ZipFile.Open(Path.Combine(_dir, "c.zip"), ZipArchiveMode.Create))
        {
            using StreamWriter w = new(zip.CreateEntry("z/one.txt").Open());
            w.Write("zipped");
        }
        using (var gz = new GZipStream(File.Create(Path.Combine(_dir, "d.txt.gz")), CompressionLevel.Fastest))
        {
            gz.Write("gunzipped"u8);
        }

        ReadAll<Blob>(Build("t", Files("*.tar*"), Node("t", "tar", ["files"]))).Select(b => b.Name).ShouldBe(
            ["000000.jpg", "000000.cls", "000001.jpg", "000001.cls", "000002.jpg", "000002.cls", "000000.jpg", "000000.cls", "000001.jpg", "000001.cls"]);
        Blob zipped = ReadAll<Blob>(Build("z", Files("*.zip"), Node("z", "zipfile", ["files"]))).Single();
        (zipped.Name, Encoding.UTF8.GetString(zipped.Data)).ShouldBe(("z/one.txt", "zipped"));
        Blob gunzipped = ReadAll<Blob>(Build("g", Files("*.gz"), Node("g", "gzip", ["files"]))).Single(b => b.Name == "d.txt");
        Encoding.UTF8.GetString(gunzipped.Data).ShouldBe("gunzipped");
    }

    [Fact]
    public void WebDataset_GroupsMembersByKey()
    {
        WriteTar("shard-0.tar", 3, gzip: false);

        List<Sample> samples = ReadAll<Sample>(Build("w", Files("*.tar"), Node("w", "webdataset", ["files"])));

        samples.Select(s => s.Key).ShouldBe(["000000", "000001", "000002"]);
        samples[1].Fields.Keys.Order().ShouldBe(["cls", "jpg"]);
        Encoding.UTF8.GetString(samples[1].Fields["cls"]).ShouldBe("1");
        samples[1].Source.ShouldEndWith("shard-0.tar:000001");
    }

    [Fact]
    public void TruncatedTar_FailsNamingTheFile_OrIsSkippedAndCounted()
    {
        WriteTar("a.tar", 4, gzip: false);
        WriteTar("b.tar", 4, gzip: false);
        byte[] whole = File.ReadAllBytes(Path.Combine(_dir, "a.tar"));
        File.WriteAllBytes(Path.Combine(_dir, "a.tar"), whole[..1300]);

        DataPipelineException ex = Should.Throw<DataPipelineException>(() => ReadAll<Sample>(Build("w", Files("*.tar"), Node("w", "webdataset", ["files"]))));
        ex.Message.ShouldContain("node 'w' (webdataset): " + Path.Combine(_dir, "a.tar"));
        ex.Message.ShouldContain("truncated or corrupt tar");

        using var loader = new DataLoader<Sample>(Build("w", Files("*.tar"), Node("w", "webdataset", ["files"], new() { ["on_error"] = "skip" })));
        List<Sample> kept = [.. loader.ReadToEnd()];
        kept.Count(s => s.Container.EndsWith("b.tar", StringComparison.Ordinal)).ShouldBe(4);
        loader.Roots[0].Stats.Skipped.ShouldBe(1);
    }

    [Fact]
    public void MissingFile_FailsNamingIt_OrIsSkipped()
    {
        File.WriteAllText(Path.Combine(_dir, "real.txt"), "here");
        string missing = Path.Combine(_dir, "gone.txt");
        JsonObject Paths() => Node("paths", "items", parameters: new() { ["values"] = new JsonArray(missing, Path.Combine(_dir, "real.txt")) });

        Should.Throw<DataPipelineException>(() => ReadAll<string>(Build("l", Paths(), Node("l", "lines", ["paths"]))))
            .Message.ShouldBe($"node 'l' (lines): {missing}: {missing} does not exist");
        ReadAll<string>(Build("l", Paths(), Node("l", "lines", ["paths"], new() { ["on_error"] = "skip" }))).ShouldBe(["here"]);
    }

    [Fact]
    public void UnreachableUrl_FailsNamingIt()
    {
        // A port on loopback where nothing listens: bound, then released.
        var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        string url = $"http://127.0.0.1:{port}/shard.tar";
        var registry = Registry().UseHttpClient(new HttpClient());
        DataGraph graph = DataGraph.Build(Spec("t", Node("urls", "items", parameters: new() { ["values"] = new JsonArray(url) }), Node("t", "tar", ["urls"])), registry);

        Should.Throw<DataPipelineException>(() => ReadAll<Blob>(graph)).Message.ShouldContain(url);
    }

    [Fact]
    public void MissingFolder_FailsNamingIt() =>
        Should.Throw<DataPipelineException>(() => ReadAll<string>(Build("files",
            Node("files", "files", parameters: new() { ["root"] = Path.Combine(_dir, "nope") }))))
        .Message.ShouldContain(Path.Combine(_dir, "nope") + " does not exist");

    [Fact]
    public void Resume_InsideATarShard_ContinuesWithTheNextMember()
    {
        for (int i = 0; i < 3; i++)
        {
            WriteTar($"s{i}.tar", 5, gzip: i == 1);
        }
        DataGraph graph = Build("w", Files("*.tar"), Node("w", "webdataset", ["files"]));
        List<string> all = ReadAll<Sample>(graph).Select(s => s.Source).ToList();

        using var first = new DataLoader<Sample>(graph);
        for (int i = 0; i < 7; i++)
        {
            first.TryNext(out _);
        }
        JsonObject state = JsonNode.Parse(first.SaveState().ToJsonString())!.AsObject();
        using var second = new DataLoader<Sample>(graph);
        second.LoadState(state);

        second.ReadToEnd().Select(s => s.Source).ShouldBe(all.Skip(7));
    }

    private void WriteTar(string name, int samples, bool gzip)
    {
        using Stream file = File.Create(Path.Combine(_dir, name));
        using Stream stream = gzip ? new GZipStream(file, CompressionLevel.Fastest) : file;
        using var tar = new TarWriter(stream, TarEntryFormat.Ustar);
        for (int i = 0; i < samples; i++)
        {
            foreach ((string ext, byte[] data) in new[] { ("jpg", new byte[600 + i]), ("cls", Encoding.UTF8.GetBytes(i.ToString(System.Globalization.CultureInfo.InvariantCulture))) })
            {
                var entry = new UstarTarEntry(TarEntryType.RegularFile, $"{i:D6}.{ext}") { DataStream = new MemoryStream(data) };
                tar.WriteEntry(entry);
            }
        }
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
