using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Kiln.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Data.Nodes;

/// <summary>A batch as TorchSharp tensors: inputs, and labels when the items had them.</summary>
/// <remarks>The consumer owns the tensors and must dispose the batch; they belong to no dispose scope.</remarks>
public sealed class TensorBatch : IDisposable
{
    internal TensorBatch(Tensor inputs, Tensor? labels)
    {
        Inputs = inputs;
        Labels = labels;
    }

    /// <summary>The stacked inputs, e.g. [batch, 3, 224, 224] float32 images or [batch, length] int64 tokens.</summary>
    public Tensor Inputs { get; }

    /// <summary>The labels, [batch] int64, or null.</summary>
    public Tensor? Labels { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Inputs.Dispose();
        Labels?.Dispose();
    }
}

/// <summary>
/// Turns a batch (an array of items) into tensors: images into [B, C, H, W] float32 plus [B] int64 labels;
/// integer or float arrays into [B, L] (shorter rows padded with <c>pad</c>); numbers into [B]. When CUDA
/// is in use the tensors are in pinned (page-locked) host memory, ready for a fast asynchronous copy.
/// </summary>
internal sealed class CollateNode<T> : Node<TensorBatch>
{
    private readonly Node<T[]> _input;
    private readonly double _pad;
    private readonly bool? _pinWanted;
    private bool _pin;

    // pin: true, false, or null for "when CUDA is in use" (decided once libtorch has loaded).
    public CollateNode(string id, Node<T[]> input, double pad, bool? pin, JsonObject? parameters)
        : base(id, "collate", [input], parameters)
    {
        (_input, _pad, _pinWanted) = (input, pad, pin);
    }

    protected override bool Produce(out TensorBatch item)
    {
        if (!_input.TryNext(out T[] batch))
        {
            item = null!;
            return false;
        }
        item = Collate(batch);
        return true;
    }

    private TensorBatch Collate(T[] batch)
    {
        TorchRuntime.EnsureInitialized();
        _pin = _pinWanted ?? PinnedMemory.Available;
        switch (batch)
        {
            case LabeledImage[] images when images.Length > 0:
            {
                LabeledImage first = images[0];
                if (images.Any(i => i.Height != first.Height || i.Width != first.Width))
                {
                    throw new DataPipelineException($"node '{Id}' (collate): images of different sizes in one batch ({first.Source} is {first.Width}x{first.Height})");
                }
                int plane = 3 * first.Height * first.Width;
                // Straight into the tensor's memory: no intermediate batch-sized array.
                Tensor inputs = Pin(torch.empty([images.Length, 3, first.Height, first.Width], ScalarType.Float32));
                Span<float> destination = MemoryMarshal.Cast<byte, float>(inputs.bytes);
                for (int i = 0; i < images.Length; i++)
                {
                    images[i].Pixels.AsSpan().CopyTo(destination.Slice(i * plane, plane));
                }
                Tensor labels = Pin(torch.tensor(images.Select(i => i.Label).ToArray(), [images.Length]));
                return new TensorBatch(inputs, labels);
            }
            case int[][] rows:
            {
                long[] flat = Pad(rows, r => Array.ConvertAll(r, v => (long)v), (long)_pad, out long width);
                return new TensorBatch(Pin(torch.tensor(flat, [rows.Length, width])), null);
            }
            case long[][] rows:
            {
                long[] flat = Pad(rows, r => r, (long)_pad, out long width);
                return new TensorBatch(Pin(torch.tensor(flat, [rows.Length, width])), null);
            }
            case float[][] rows:
            {
                float[] flat = Pad(rows, r => r, (float)_pad, out long width);
                return new TensorBatch(Pin(torch.tensor(flat, [rows.Length, width])), null);
            }
            case long[] numbers:
                return new TensorBatch(Pin(torch.tensor(numbers)), null);
            case double[] numbers:
                return new TensorBatch(Pin(torch.tensor(numbers)), null);
            case float[] numbers:
                return new TensorBatch(Pin(torch.tensor(numbers)), null);
            default:
                throw new DataPipelineException($"node '{Id}' (collate): cannot collate {typeof(T).Name} batches");
        }
    }

    private static TOut[] Pad<TRow, TOut>(TRow[] rows, Func<TRow, TOut[]> values, TOut pad, out long width)
    {
        TOut[][] converted = [.. rows.Select(values)];
        width = converted.Length == 0 ? 0 : converted.Max(r => r.Length);
        var flat = new TOut[converted.Length * width];
        Array.Fill(flat, pad);
        for (int i = 0; i < converted.Length; i++)
        {
            converted[i].CopyTo(flat, i * width);
        }
        return flat;
    }

    private Tensor Pin(Tensor tensor)
    {
        if (!_pin)
        {
            return tensor;
        }
        Tensor pinned = tensor.pin_memory();
        tensor.Dispose();
        return pinned;
    }

    protected override void ResetCore(JsonObject? state)
    {
    }
}

/// <summary>Where collation puts its tensors.</summary>
internal static class PinnedMemory
{
    /// <summary>True when libtorch runs with CUDA: collated batches are then pinned.</summary>
    public static bool Available => TorchRuntime.Current?.CudaAvailable == true && RuntimeInformation.IsOSPlatform(OSPlatform.Linux);
}
