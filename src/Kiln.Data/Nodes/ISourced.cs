namespace Kiln.Data.Nodes;

/// <summary>An item that knows where it came from (file, archive member, URL), for error messages.</summary>
public interface ISourced
{
    /// <summary>Where the item came from: "shard-0003.tar:000123.jpg", "http://…/a.tar".</summary>
    public string Source { get; }
}
