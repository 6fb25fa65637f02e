using System.Text.Json.Nodes;
using Kiln.Data.Nodes;

namespace Kiln.Data;

/// <summary>File, text and archive sources: a lister, and readers that turn locations into items.</summary>
internal static partial class BuiltInNodes
{
    static partial void RegisterSources(NodeRegistry r)
    {
        r.AddNodeType("files", c =>
        {
            string? root = c.Parameters.String("root", required: true);
            string[] patterns = c.Parameters.Strings("patterns");
            bool recursive = c.Parameters.Bool("recursive");
            return Sources(c, 0) && !c.Parameters.Failed ? new FileListerNode(c.Spec.Id, root!, patterns, recursive, c.Spec.Parameters) : null;
        });
        r.AddNodeType("s3_list", c =>
        {
            string? uri = c.Parameters.String("uri", required: true);
            string[] patterns = c.Parameters.Strings("patterns");
            if (!Sources(c, 0) || uri is null)
            {
                return null;
            }
            if (!Remote.S3Location.TryParse(uri, out Remote.S3Location prefix))
            {
                c.Error($"parameter \"uri\" is \"{uri}\"; it must be s3://bucket/prefix");
                return null;
            }
            return c.Parameters.Failed ? null : new S3ListNode(c.Spec.Id, prefix, patterns, c.Registry.Storage, c.Spec.Parameters);
        });
        Reader<string>(r, "lines", static _ => Readers.Lines);
        Reader<JsonNode>(r, "jsonl", static _ => Readers.JsonLines);
        Reader<IReadOnlyDictionary<string, string>>(r, "csv", static p =>
        {
            string separator = p.String("separator", ",") ?? ",";
            if (separator.Length != 1)
            {
                p.Error("parameter \"separator\" must be one character");
            }
            return (location, node) => Readers.Csv(location, node, separator[0]);
        });
        Reader<Blob>(r, "tar", static _ => Readers.Tar);
        Reader<Blob>(r, "zipfile", static _ => Readers.Zip);
        Reader<Blob>(r, "gzip", static _ => Readers.Gzip);
        Reader<Blob>(r, "read", static _ => Readers.Whole);
        Reader<Sample>(r, "webdataset", static _ => Readers.WebDataset);
    }

    /// <summary>A node type that reads each location (string) of its input into items, resuming inside a location.</summary>
    private static void Reader<TOut>(NodeRegistry r, string type, Func<NodeParameters, Func<string, ReadContext, IEnumerable<TOut>>> reader)
    {
        r.AddNodeType(type, c =>
        {
            if (One(c) is not { } input)
            {
                return null;
            }
            if (input.ItemType != typeof(string))
            {
                c.Error($"{type} reads locations (strings), but '{input.Id}' yields {NodeBuildContext.Pretty(input.ItemType)}");
                return null;
            }
            Func<string, ReadContext, IEnumerable<TOut>> read = reader(c.Parameters);
            StorageAccess storage = c.Registry.Storage;
            if (c.Parameters.Failed)
            {
                return null;
            }
            FlatMapNode<string, TOut>? node = null;
            node = new FlatMapNode<string, TOut>(c.Spec.Id, (Node<string>)input, location => read(location, new ReadContext(node!, storage)), c.Spec.Parameters, type);
            return node;
        });
    }
}
