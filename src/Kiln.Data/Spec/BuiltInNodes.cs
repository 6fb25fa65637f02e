using System.Text.Json.Nodes;
using Kiln.Data.Nodes;

namespace Kiln.Data;

/// <summary>The node types every registry has, with their parameters (docs/data.md lists them).</summary>
internal static partial class BuiltInNodes
{
    public static void Register(NodeRegistry r)
    {
        r.AddNodeType("range", c =>
        {
            (long start, long count) = (c.Parameters.Long("start"), c.Parameters.Long("count", required: true, min: 0));
            return Sources(c, 0) && !c.Parameters.Failed ? new RangeNode(c.Spec.Id, start, count, c.Spec.Parameters) : null;
        });
        r.AddNodeType("items", Items);
        r.AddNodeType("map", Map);
        r.AddNodeType("filter", c => One(c) is { } input && c.Function("fn", typeof(Func<,>), input.ItemType) is { } fn
            ? c.Make(typeof(FilterNode<>), [input.ItemType], c.Spec.Id, input, fn, c.Spec.Parameters)
            : null);
        r.AddNodeType("flat_map", c => One(c) is { } input && c.Function("fn", typeof(Func<,>), input.ItemType) is { } fn && EnumerableItem(c, fn.GetType().GetGenericArguments()[1]) is { } item
            ? c.Make(typeof(FlatMapNode<,>), [input.ItemType, item], c.Spec.Id, input, fn, c.Spec.Parameters, "flat_map")
            : null);
        r.AddNodeType("unbatch", Unbatch);
        r.AddNodeType("take", c => One(c) is { } input ? c.Make(typeof(TakeNode<>), [input.ItemType], c.Spec.Id, input, c.Parameters.Long("count", required: true, min: 0), c.Spec.Parameters) : null);
        r.AddNodeType("cycle", c => One(c) is { } input ? c.Make(typeof(CycleNode<>), [input.ItemType], c.Spec.Id, input, c.Parameters.Long("times", 0, min: 0), c.Spec.Parameters) : null);
        r.AddNodeType("shard", c => One(c) is { } input ? c.Make(typeof(ShardNode<>), [input.ItemType], c.Spec.Id, input, c.Spec.Parameters) : null);
        r.AddNodeType("shuffle", c => One(c) is { } input ? c.Make(typeof(ShuffleNode<>), [input.ItemType], c.Spec.Id, input, c.Parameters.Int("buffer", required: true, min: 1), c.Spec.Parameters) : null);
        r.AddNodeType("batch", c => One(c) is { } input
            ? c.Make(typeof(BatchNode<>), [input.ItemType], c.Spec.Id, input, c.Parameters.Int("size", required: true, min: 1), c.Parameters.Bool("drop_last"), c.Spec.Parameters)
            : null);
        r.AddNodeType("bucket_batch", BucketBatch);
        r.AddNodeType("in_batch_shuffle", c => One(c) is { } input && ArrayItem(c, input) is { } item
            ? c.Make(typeof(InBatchShuffleNode<>), [item], c.Spec.Id, input, c.Spec.Parameters)
            : null);
        r.AddNodeType("concat", c => Same(c, 1) is { } type ? c.Make(typeof(ConcatNode<>), [type], c.Spec.Id, Typed(c, type), c.Spec.Parameters) : null);
        r.AddNodeType("interleave", c => Same(c, 1) is { } type
            ? c.Make(typeof(InterleaveNode<>), [type], c.Spec.Id, Typed(c, type), c.Parameters.Choice("stop", "all", "all", "first") == "first", c.Spec.Parameters)
            : null);
        r.AddNodeType("zip", c =>
        {
            if (c.Inputs.Length != 2)
            {
                c.Error($"zip takes 2 inputs, got {c.Inputs.Length}");
                return null;
            }
            return c.Make(typeof(ZipNode<,>), [c.Inputs[0].ItemType, c.Inputs[1].ItemType], c.Spec.Id, c.Inputs[0], c.Inputs[1], c.Spec.Parameters);
        });
        r.AddNodeType("weighted_sample", WeightedSample);
        r.AddNodeType("prefetch", c => One(c) is { } input
            ? c.Make(typeof(ParallelMapNode<,>), [input.ItemType, input.ItemType], c.Spec.Id, input, Identity(input.ItemType), 1, true,
                c.Parameters.Int("size", 2, min: 1), c.Parameters.Int("snapshot_every", 1, min: 1), c.Spec.Parameters, "prefetch")
            : null);
        r.AddNodeType("fork", c =>
        {
            int outputs = c.Parameters.Int("outputs", required: true, min: 2, max: 64);
            int buffer = c.Parameters.Int("buffer", 1000, min: 1);
            return One(c) is { } input ? c.Make(typeof(ForkNode<>), [input.ItemType], c.Spec.Id, "fork", input, outputs, null, buffer, c.Spec.Parameters) : null;
        });
        r.AddNodeType("demux", c =>
        {
            int outputs = c.Parameters.Int("outputs", required: true, min: 2, max: 64);
            int buffer = c.Parameters.Int("buffer", 1000, min: 1);
            if (One(c) is not { } input || c.Function("key", typeof(Func<,>), input.ItemType) is not { } key)
            {
                return null;
            }
            return c.Make(typeof(ForkNode<>), [input.ItemType], c.Spec.Id, "demux", input, outputs, key, buffer, c.Spec.Parameters);
        });
        RegisterSources(r);
        RegisterImaging(r);
        RegisterText(r);
        RegisterFunctions(r);
    }

    /// <summary>Functions every registry has, so specs run from the command line need no code.</summary>
    private static void RegisterFunctions(NodeRegistry r)
    {
        r.AddMap<JsonNode, string>("json.text", static n => n["text"]?.GetValue<string>() ?? throw new InvalidDataException("no \"text\" field"));
        r.AddMap<string, string[]>("text.words", static t => t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
        r.AddKey<string[]>("words.count", static w => w.Length);
        r.AddKey<string>("text.length", static t => t.Length);
        r.AddMap<Blob, string>("blob.utf8", static b => System.Text.Encoding.UTF8.GetString(b.Data));
    }

    private static Node? Map(NodeBuildContext c)
    {
        int threads = c.Parameters.Int("threads", 0, min: 0, max: 1024);
        bool ordered = c.Parameters.Bool("ordered", true);
        int inFlight = c.Parameters.Int("in_flight", Math.Max(2, 2 * threads), min: 1);
        int snapshotEvery = c.Parameters.Int("snapshot_every", 1, min: 1);
        if (One(c) is not { } input || c.Function("fn", typeof(Func<,>), input.ItemType) is not { } fn || c.Parameters.Failed)
        {
            return null;
        }
        Type output = fn.GetType().GetGenericArguments()[1];
        return threads == 0
            ? c.Make(typeof(MapNode<,>), [input.ItemType, output], c.Spec.Id, input, fn, c.Spec.Parameters, "map")
            : c.Make(typeof(ParallelMapNode<,>), [input.ItemType, output], c.Spec.Id, input, fn, threads, ordered, inFlight, snapshotEvery, c.Spec.Parameters, "map");
    }

    private static Node? Unbatch(NodeBuildContext c)
    {
        if (One(c) is not { } input || ArrayItem(c, input) is not { } item)
        {
            return null;
        }
        Delegate identity = (Delegate)typeof(BuiltInNodes).GetMethod(nameof(AsEnumerable), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(item).Invoke(null, null)!;
        return c.Make(typeof(FlatMapNode<,>), [input.ItemType, item], c.Spec.Id, input, identity, c.Spec.Parameters, "unbatch");
    }

    private static Func<T[], IEnumerable<T>> AsEnumerable<T>() => static batch => batch;

    private static Node? BucketBatch(NodeBuildContext c)
    {
        int size = c.Parameters.Int("size", required: true, min: 1);
        bool dropLast = c.Parameters.Bool("drop_last");
        int[] bounds = [.. c.Parameters.Doubles("bounds", required: true).Select(b => (int)b)];
        if (One(c) is not { } input || c.Function("length", typeof(Func<,>), input.ItemType) is not { } length)
        {
            return null;
        }
        if (length.GetType().GetGenericArguments()[1] != typeof(int))
        {
            c.Error("parameter \"length\": the function must return an int");
            return null;
        }
        if (bounds.Length == 0 || bounds.Zip(bounds.Skip(1)).Any(p => p.First >= p.Second))
        {
            c.Error("parameter \"bounds\" must be a non-empty increasing list of lengths");
        }
        return c.Parameters.Failed ? null : c.Make(typeof(BucketBatchNode<>), [input.ItemType], c.Spec.Id, input, size, bounds, dropLast, length, c.Spec.Parameters);
    }

    private static Node? WeightedSample(NodeBuildContext c)
    {
        if (Same(c, 1) is not { } type)
        {
            return null;
        }
        double[] weights = c.Parameters.Doubles("weights", required: true);
        if (weights.Length != c.Inputs.Length)
        {
            c.Error($"parameter \"weights\" has {weights.Length} numbers for {c.Inputs.Length} inputs");
            return null;
        }
        StopRule stop = c.Parameters.Choice("stop", "cycle_until_all_exhausted", "cycle_until_all_exhausted", "first_exhausted", "all_exhausted") switch
        {
            "first_exhausted" => StopRule.FirstExhausted,
            "all_exhausted" => StopRule.AllExhausted,
            _ => StopRule.CycleUntilAllExhausted,
        };
        return c.Make(typeof(WeightedSampleNode<>), [type], c.Spec.Id, Typed(c, type), weights, stop, c.Spec.Parameters);
    }

    private static Node? Items(NodeBuildContext c)
    {
        if (!Sources(c, 0))
        {
            return null;
        }
        if (c.Parameters.Raw("values") is not JsonArray given)
        {
            c.Error("parameter \"values\" is required: a list of strings, integers or JSON values");
            return null;
        }
        JsonArray values = JsonNode.Parse(given.ToJsonString())!.AsArray();
        if (values.All(v => v is JsonValue j && j.TryGetValue(out string? _)))
        {
            return new ListNode<string>(c.Spec.Id, [.. values.Select(v => v!.GetValue<string>())], c.Spec.Parameters);
        }
        if (values.All(v => v is JsonValue j && j.TryGetValue(out long _)))
        {
            return new ListNode<long>(c.Spec.Id, [.. values.Select(v => v!.GetValue<long>())], c.Spec.Parameters);
        }
        return new ListNode<JsonNode?>(c.Spec.Id, [.. values.Select(v => v?.DeepClone())], c.Spec.Parameters);
    }

    internal static bool Sources(NodeBuildContext c, int inputs)
    {
        if (c.Inputs.Length != inputs)
        {
            c.Error($"{c.Spec.Type} takes {inputs} input(s), got {c.Inputs.Length}");
            return false;
        }
        return true;
    }

    internal static Node? One(NodeBuildContext c) => Sources(c, 1) ? c.Inputs[0] : null;

    private static Type? Same(NodeBuildContext c, int min)
    {
        if (c.Inputs.Length < min)
        {
            c.Error($"{c.Spec.Type} takes at least {min} input(s)");
            return null;
        }
        Type type = c.Inputs[0].ItemType;
        if (c.Inputs.Any(i => i.ItemType != type))
        {
            c.Error($"{c.Spec.Type}: inputs yield different types ({string.Join(", ", c.Inputs.Select(i => $"'{i.Id}': {NodeBuildContext.Pretty(i.ItemType)}"))})");
            return null;
        }
        return type;
    }

    private static Array Typed(NodeBuildContext c, Type type)
    {
        Array array = Array.CreateInstance(typeof(Node<>).MakeGenericType(type), c.Inputs.Length);
        for (int i = 0; i < c.Inputs.Length; i++)
        {
            array.SetValue(c.Inputs[i], i);
        }
        return array;
    }

    private static Type? ArrayItem(NodeBuildContext c, Node input)
    {
        if (!input.ItemType.IsArray)
        {
            c.Error($"{c.Spec.Type} needs batches (arrays), but '{input.Id}' yields {NodeBuildContext.Pretty(input.ItemType)}");
            return null;
        }
        return input.ItemType.GetElementType();
    }

    private static Type? EnumerableItem(NodeBuildContext c, Type type)
    {
        Type? enumerable = type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IEnumerable<>)
            ? type
            : type.GetInterfaces().FirstOrDefault(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IEnumerable<>));
        if (enumerable is null)
        {
            c.Error($"parameter \"fn\": the function must return a sequence, not {NodeBuildContext.Pretty(type)}");
            return null;
        }
        return enumerable.GetGenericArguments()[0];
    }

    private static Delegate Identity(Type type) =>
        (Delegate)typeof(BuiltInNodes).GetMethod(nameof(IdentityOf), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(type).Invoke(null, null)!;

    private static Func<T, T> IdentityOf<T>() => static x => x;

    static partial void RegisterSources(NodeRegistry r);

    static partial void RegisterImaging(NodeRegistry r);

    static partial void RegisterText(NodeRegistry r);
}
