using Kiln.Data.Imaging;
using Kiln.Data.Nodes;

namespace Kiln.Data;

/// <summary>The image decoder node and collation to tensors.</summary>
internal static partial class BuiltInNodes
{
    static partial void RegisterImaging(NodeRegistry r)
    {
        r.AddNodeType("image", c =>
        {
            string mode = c.Parameters.Choice("mode", "random_resized_crop", "random_resized_crop", "center_crop", "resize");
            int size = c.Parameters.Int("size", 224, min: 1, max: 8192);
            int resize = c.Parameters.Int("resize", (int)Math.Round(size / 0.875), min: 1, max: 16384);
            bool flip = c.Parameters.Bool("flip");
            string normalize = c.Parameters.Choice("normalize", "imagenet", "imagenet", "none");
            string? field = c.Parameters.String("field");
            string label = c.Parameters.String("label", "cls") ?? "cls";
            int threads = c.Parameters.Int("threads", 0, min: 0, max: 1024);
            bool ordered = c.Parameters.Bool("ordered", true);
            int inFlight = c.Parameters.Int("in_flight", Math.Max(2, 2 * threads), min: 1);
            if (One(c) is not { } input)
            {
                return null;
            }
            if (input.ItemType != typeof(Sample) && input.ItemType != typeof(Blob) && input.ItemType != typeof(byte[]))
            {
                c.Error($"image reads WebDataset samples, blobs or bytes, but '{input.Id}' yields {NodeBuildContext.Pretty(input.ItemType)}");
                return null;
            }
            if (c.Parameters.Failed)
            {
                return null;
            }
            var pipeline = new ImagePipeline(
                mode switch { "center_crop" => ImageMode.CenterCrop, "resize" => ImageMode.Resize, _ => ImageMode.RandomResizedCrop },
                size, resize, flip, normalize == "imagenet" ? ImageNormalizer.ImageNet : null, field, label);
            Node? self = null;
            Func<object, long, LabeledImage> apply = (item, index) => pipeline.Apply(item, self!.Seed, index);
            self = (Node?)typeof(BuiltInNodes).GetMethod(nameof(MakeImage), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(input.ItemType).Invoke(null, [c.Spec, input, apply, threads, ordered, inFlight]);
            return self;
        });
        r.AddNodeType("collate", c =>
        {
            double pad = c.Parameters.Double("pad");
            string pin = c.Parameters.Choice("pin_memory", "auto", "auto", "true", "false");
            if (One(c) is not { } input || ArrayItem(c, input) is not { } item)
            {
                return null;
            }
            bool? pinned = pin == "auto" ? null : pin == "true";
            return c.Make(typeof(CollateNode<>), [item], c.Spec.Id, input, pad, pinned, c.Spec.Parameters);
        });
    }

    private static Node MakeImage<TIn>(NodeSpec spec, Node input, Func<object, long, LabeledImage> apply, int threads, bool ordered, int inFlight)
    {
        Func<TIn, long, LabeledImage> typed = (item, index) => apply(item!, index);
        return threads == 0
            ? new MapNode<TIn, LabeledImage>(spec.Id, (Node<TIn>)input, typed, spec.Parameters, "image")
            : new ParallelMapNode<TIn, LabeledImage>(spec.Id, (Node<TIn>)input, typed, threads, ordered, inFlight, 1, spec.Parameters, "image");
    }
}
