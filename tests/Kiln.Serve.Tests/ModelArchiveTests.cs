using System.IO.Compression;
using Kiln.Serve.Archives;

namespace Kiln.Serve.Tests;

public sealed class ModelArchiveTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "kiln-serve-archive-tests", Guid.NewGuid().ToString("N"));

    public ModelArchiveTests() => Directory.CreateDirectory(_folder);

    [Fact]
    public async Task Builder_ThenExtract_RoundTripsManifestFilesAndConfig()
    {
        string model = Path.Combine(_folder, "linear.onnx");
        await File.WriteAllBytesAsync(model, TinyOnnx.Linear(1f));
        string config = Path.Combine(_folder, "model-config.yaml");
        await File.WriteAllTextAsync(config, "minWorkers: 2\nbatchSize: 4 # comment\nhandler:\n  profile: true\n");
        string mar = Path.Combine(_folder, "lin.mar");
        await new ModelArchiveBuilder(new ModelManifest("lin", "2.0", "linear.onnx", "tensor") { ConfigFile = "model-config.yaml" })
            .AddFile(model).AddFile(config).WriteAsync(mar);

        ModelArchive archive = ModelArchive.Extract(mar, Path.Combine(_folder, "x"), 1 << 20);

        archive.Manifest.ModelName.ShouldBe("lin");
        archive.Manifest.ModelVersion.ShouldBe("2.0");
        archive.Manifest.Handler.ShouldBe("tensor");
        File.ReadAllBytes(archive.PathOf("linear.onnx")).ShouldBe(TinyOnnx.Linear(1f));
        ModelArchive.ConfigInt(archive.Config, "minWorkers").ShouldBe(2);
        ModelArchive.ConfigInt(archive.Config, "batchSize").ShouldBe(4);
        archive.Config.ContainsKey("profile").ShouldBeFalse();
    }

    [Theory]
    [InlineData("../evil.txt")]
    [InlineData("a/../../evil.txt")]
    [InlineData("/etc/evil.txt")]
    public void Extract_PathTraversalEntry_RefusedAndNothingWrittenOutside(string entryName)
    {
        string mar = WriteZip(entryName, unixMode: null);
        string root = Path.Combine(_folder, "deep", "root");

        ServeException ex = Should.Throw<ServeException>(() => ModelArchive.Extract(mar, root, 1 << 20));

        ex.StatusCode.ShouldBe(400);
        ex.Message.ShouldContain("outside the archive");
        File.Exists(Path.Combine(_folder, "deep", "evil.txt")).ShouldBeFalse();
        Directory.GetFileSystemEntries(root).ShouldBeEmpty(); // the half-extracted folder is removed
    }

    [Fact]
    public void Extract_SymbolicLinkEntry_Refused()
    {
        string mar = WriteZip("link", unixMode: 0xA1FF);

        ServeException ex = Should.Throw<ServeException>(() => ModelArchive.Extract(mar, Path.Combine(_folder, "x"), 1 << 20));

        ex.Message.ShouldContain("symbolic link");
    }

    [Fact]
    public void Extract_MissingManifest_SaysSo()
    {
        string mar = WriteZip("model.onnx", unixMode: null);

        ServeException ex = Should.Throw<ServeException>(() => ModelArchive.Extract(mar, Path.Combine(_folder, "x"), 1 << 20));

        ex.Message.ShouldContain("MAR-INF/MANIFEST.json");
    }

    private string WriteZip(string entryName, int? unixMode)
    {
        string path = Path.Combine(_folder, Guid.NewGuid().ToString("N") + ".mar");
        using (ZipArchive zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            ZipArchiveEntry entry = zip.CreateEntry(entryName);
            if (unixMode is { } mode)
            {
                entry.ExternalAttributes = mode << 16;
            }
            using StreamWriter writer = new(entry.Open());
            writer.Write("/etc/passwd");
        }
        return path;
    }

    public void Dispose() => Directory.Delete(_folder, recursive: true);
}
