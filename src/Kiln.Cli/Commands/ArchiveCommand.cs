using System.CommandLine;
using Kiln.Serve.Archives;

namespace Kiln.Cli.Commands;

/// <summary><c>kiln archive</c>: writes a <c>.mar</c> with torch-model-archiver's flags.</summary>
internal static class ArchiveCommand
{
    public static Command Create()
    {
        var name = new Option<string>("--model-name") { Description = "Model name (starts with a letter; letters, digits, _ - .).", Required = true };
        var version = new Option<string>("--version") { Description = "Model version.", DefaultValueFactory = _ => "1.0" };
        var serialized = new Option<string>("--serialized-file") { Description = "The ONNX model file.", Required = true };
        var handler = new Option<string>("--handler") { Description = "A built-in handler (tensor, image_classifier, image_segmenter, object_detector, image_embedder, text_classifier, text_embedder) or a C# handler assembly shipped with --extra-files (NAME.dll or NAME.dll:Namespace.Class).", Required = true };
        var extra = new Option<string?>("--extra-files") { Description = "Comma-separated files to add (e.g. preprocess.onnx for image_embedder)." };
        var config = new Option<string?>("--config-file") { Description = "A model-config.yaml to add." };
        var exportPath = new Option<string>("--export-path") { Description = "Folder to write <model-name>.mar into.", DefaultValueFactory = _ => "." };
        var force = new Option<bool>("--force", "-f") { Description = "Overwrite an existing archive." };
        var command = new Command("archive", "Write a TorchServe model archive (.mar) for kiln serve.")
        {
            name, version, serialized, handler, extra, config, exportPath, force,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string serializedFile = parse.GetValue(serialized)!;
            string? configFile = parse.GetValue(config);
            try
            {
                var builder = new ModelArchiveBuilder(new ModelManifest(parse.GetValue(name)!, parse.GetValue(version)!, Path.GetFileName(serializedFile), parse.GetValue(handler)!)
                {
                    ConfigFile = configFile is null ? null : Path.GetFileName(configFile),
                });
                builder.AddFile(serializedFile);
                foreach (string file in (parse.GetValue(extra) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    builder.AddFile(file);
                }
                if (configFile is not null)
                {
                    builder.AddFile(configFile);
                }
                string mar = Path.Combine(parse.GetValue(exportPath)!, parse.GetValue(name) + ".mar");
                await builder.WriteAsync(mar, parse.GetValue(force), cancellationToken).ConfigureAwait(false);
                await parse.InvocationConfiguration.Output.WriteLineAsync($"archive: wrote {mar}").ConfigureAwait(false);
                return 0;
            }
            catch (Exception ex) when (ex is IOException or ArgumentException)
            {
                await parse.InvocationConfiguration.Error.WriteLineAsync($"kiln archive: {ex.Message}").ConfigureAwait(false);
                return 1;
            }
        });
        return command;
    }
}
