using System.Text.Json.Nodes;

namespace Kiln.Data;

/// <summary>Saves and restores the state of a node together with everything upstream of it.</summary>
/// <remarks>
/// The state is a JSON object keyed by node id, holding each node's own state. A node that runs its upstream
/// on threads of its own (prefetch, parallel map) saves that upstream inside its own state, as a snapshot
/// consistent with the items it has handed out, so the walk stops there.
/// </remarks>
internal static class GraphState
{
    /// <summary>The state of <paramref name="root"/> and its upstream.</summary>
    public static JsonObject Capture(Node root)
    {
        var states = new JsonObject();
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        Visit(root);
        return states;

        void Visit(Node node)
        {
            if (!seen.Add(node))
            {
                return;
            }
            states[node.Id] = node.SaveState();
            if (node.OwnsUpstream)
            {
                return;
            }
            foreach (Node input in node.Inputs)
            {
                Visit(input);
            }
        }
    }

    /// <summary>Resets <paramref name="root"/> and its upstream, inputs first, to <paramref name="states"/> (null: the start).</summary>
    public static void Restore(Node root, PipelineContext context, JsonObject? states)
    {
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        Visit(root);

        void Visit(Node node)
        {
            if (!seen.Add(node))
            {
                return;
            }
            if (!node.OwnsUpstream)
            {
                foreach (Node input in node.Inputs)
                {
                    Visit(input);
                }
            }
            JsonObject? own = null;
            if (states is not null && states.TryGetPropertyValue(node.Id, out JsonNode? value))
            {
                own = value as JsonObject;
            }
            else if (states is not null)
            {
                throw new DataPipelineException($"the saved state has no entry for node '{node.Id}': it was saved from a different graph");
            }
            node.Reset(context, own?.DeepClone().AsObject());
        }
    }

    /// <summary>Reads and drops <paramref name="count"/> items: the fast-forward that replays consumed input.</summary>
    public static void Skip<T>(Node<T> node, long count)
    {
        for (long i = 0; i < count; i++)
        {
            if (!node.TryNext(out _))
            {
                throw new DataPipelineException($"node '{node.Id}' ended {count - i} items before the saved position: its input changed since the checkpoint");
            }
        }
    }
}
