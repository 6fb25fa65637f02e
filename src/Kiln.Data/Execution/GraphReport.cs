using System.Globalization;
using System.Text;

namespace Kiln.Data;

/// <summary>The per-node table <c>kiln data bench</c> prints: where a pipeline spends its time.</summary>
public static class GraphReport
{
    /// <summary>Every node from <paramref name="root"/> upstream, each once, sources first.</summary>
    public static IReadOnlyList<Node> Nodes(Node root)
    {
        ArgumentNullException.ThrowIfNull(root);
        var order = new List<Node>();
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        void Visit(Node node)
        {
            if (!seen.Add(node))
            {
                return;
            }
            foreach (Node input in node.Inputs)
            {
                Visit(input);
            }
            order.Add(node);
        }
        Visit(root);
        return order;
    }

    /// <summary>
    /// A table: items, bytes read, skipped, time inside the node including its inputs, its own time (inputs
    /// subtracted; for threaded nodes, the consumer's wait), and that own time per item.
    /// </summary>
    public static string Table(Node root)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{"node",-16} {"type",-14} {"items",10} {"MB read",9} {"skipped",8} {"incl ms",10} {"self ms",10} {"self/item",10}");
        foreach (Node node in Nodes(root))
        {
            double inclusive = node.Stats.Inclusive.TotalMilliseconds;
            double self = node.OwnsUpstream
                ? node.Stats.Waiting.TotalMilliseconds
                : inclusive - node.Inputs.Sum(i => i.Stats.Inclusive.TotalMilliseconds);
            long items = node.Stats.Items;
            string perItem = items == 0 ? "-" : FormatDuration(self / items);
            text.AppendLine(CultureInfo.InvariantCulture,
                $"{Trim(node.Id, 16),-16} {node.Type,-14} {items,10} {node.Stats.Bytes / 1e6,9:F1} {node.Stats.Skipped,8} {inclusive,10:F1} {Math.Max(0, self),10:F1} {perItem,10}");
        }
        return text.ToString();
    }

    private static string FormatDuration(double milliseconds) => milliseconds switch
    {
        < 0 => "0 ns",
        < 0.001 => $"{milliseconds * 1e6:F0} ns",
        < 1 => $"{milliseconds * 1e3:F1} us",
        _ => $"{milliseconds:F2} ms",
    };

    private static string Trim(string text, int width) => text.Length <= width ? text : text[..(width - 1)] + "~";
}
