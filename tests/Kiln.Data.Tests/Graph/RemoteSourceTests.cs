using System.Formats.Tar;
using System.Text;
using System.Text.Json.Nodes;
using Kiln.Data.Nodes;
using Kiln.Data.Tests.Remote;

namespace Kiln.Data.Tests.Graph;

/// <summary>WebDataset shards read through real servers on 127.0.0.1: Kestrel over HTTP, s3rver over S3.</summary>
[Collection(S3rverGroup.Name)]
public sealed class RemoteSourceTests : IClassFixture<HttpTestServer>
{
    private readonly HttpTestServer _http;
    private readonly S3rverFixture _s3;

    public RemoteSourceTests(HttpTestServer http, S3rverFixture s3)
    {
        (_http, _s3) = (http, s3);
    }

    [Fact]
    public void Http_WebDatasetShards_AreReadLikeLocalOnes()
    {
        File.WriteAllBytes(Path.Combine(_http.Folder, "shard-a.tar"), Shard("a", 3));
        File.WriteAllBytes(Path.Combine(_http.Folder, "shard-b.tar"), Shard("b", 2));
        string[] urls = [_http.Url("/files/shard-a.tar").ToString(), _http.Url("/files/shard-b.tar").ToString()];
        DataGraph graph = Graph(NodeRegistry.CreateDefault(), TestGraphs.Node("urls", "items", parameters: new() { ["values"] = new JsonArray([.. urls.Select(u => (JsonNode)u)]) }));

        List<Sample> samples = TestGraphs.ReadAll<Sample>(graph);

        samples.Select(s => s.Key).ShouldBe(["a0", "a1", "a2", "b0", "b1"]);
        samples[3].Source.ShouldBe(urls[1] + ":b0");
        Encoding.UTF8.GetString(samples[4].Fields["txt"]).ShouldBe("b1");
    }

    [Fact]
    public void Http_MissingShard_FailsNamingTheUrlAndStatus()
    {
        string url = _http.Url("/files/nope.tar").ToString();
        DataGraph graph = Graph(NodeRegistry.CreateDefault(), TestGraphs.Node("urls", "items", parameters: new() { ["values"] = new JsonArray(url) }));

        DataPipelineException ex = Should.Throw<DataPipelineException>(() => TestGraphs.ReadAll<Sample>(graph));

        ex.Message.ShouldContain(url);
        ex.Message.ShouldContain("404");
    }

    [Fact]
    public async Task S3_ListedShards_AreReadInKeyOrder_AndResumeInsideAShard()
    {
        await _s3.PutAsync("graph-shards/part-1.tar", Shard("q", 4));
        await _s3.PutAsync("graph-shards/part-0.tar", Shard("p", 3));
        await _s3.PutAsync("graph-shards/readme.txt", Encoding.UTF8.GetBytes("not a shard"));
        DataGraph graph = Graph(NodeRegistry.CreateDefault().UseS3(_s3.Options()),
            TestGraphs.Node("urls", "s3_list", parameters: new() { ["uri"] = $"s3://{S3rverFixture.Bucket}/graph-shards/", ["patterns"] = "*.tar" }));

        List<string> all = TestGraphs.ReadAll<Sample>(graph).Select(s => s.Source).ToList();

        all.ShouldBe([.. Enumerable.Range(0, 3).Select(i => $"s3://{S3rverFixture.Bucket}/graph-shards/part-0.tar:p{i}"),
            .. Enumerable.Range(0, 4).Select(i => $"s3://{S3rverFixture.Bucket}/graph-shards/part-1.tar:q{i}")]);
        using var first = new DataLoader<Sample>(graph);
        for (int i = 0; i < 4; i++)
        {
            first.TryNext(out _);
        }
        JsonObject state = JsonNode.Parse(first.SaveState().ToJsonString())!.AsObject();
        using var second = new DataLoader<Sample>(graph);
        second.LoadState(state);
        second.ReadToEnd().Select(s => s.Source).ShouldBe(all.Skip(4));
    }

    [Fact]
    public void S3_MissingBucket_FailsNamingIt()
    {
        DataGraph graph = Graph(NodeRegistry.CreateDefault().UseS3(_s3.Options()),
            TestGraphs.Node("urls", "s3_list", parameters: new() { ["uri"] = "s3://no-such-bucket/x/" }));

        Should.Throw<DataPipelineException>(() => TestGraphs.ReadAll<Sample>(graph)).Message.ShouldContain("no-such-bucket");
    }

    private static DataGraph Graph(NodeRegistry registry, JsonObject source) =>
        DataGraph.Build(TestGraphs.Spec("samples", source, TestGraphs.Node("samples", "webdataset", ["urls"])), registry);

    private static byte[] Shard(string prefix, int count)
    {
        using var memory = new MemoryStream();
        using (var tar = new TarWriter(memory, TarEntryFormat.Ustar, leaveOpen: true))
        {
            for (int i = 0; i < count; i++)
            {
                tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, $"{prefix}{i}.txt") { DataStream = new MemoryStream(Encoding.UTF8.GetBytes($"{prefix}{i}")) });
                tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, $"{prefix}{i}.bin") { DataStream = new MemoryStream(new byte[3000 + i]) });
            }
        }
        return memory.ToArray();
    }
}
