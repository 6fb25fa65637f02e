using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// Weight-only int4: every MatMul whose second input is a 2-D float initializer W [K, N] becomes ONNX Runtime's
/// <c>com.microsoft.MatMulNBits</c> (bits 4): W is cut along K into blocks of <see cref="BlockSize"/> values per
/// output column, each block with its own float scale (and, when <see cref="Symmetric"/> is off, its own 4-bit zero
/// point); a value dequantizes as (code − zero point) · scale. The activation stays float.
/// </summary>
/// <remarks>
/// Layout (ORT's contrib operator): B is uint8 [N, K/block, block/2], two codes a byte, the first of each pair in the
/// low nibble, codes running along K; scales are float [N · K/block], column by column; zero points (asymmetric only)
/// are packed the same way, one row of ceil(blocks/2) bytes per column. Without zero points ORT uses 8. K that is not a
/// multiple of the block size is padded with zero codes in the last block (ORT reads only K of them).
/// </remarks>
internal sealed class Int4WeightQuantizer : IQuantizer
{
    private const int FloatType = (int)TensorProto.Types.DataType.Float;

    /// <inheritdoc/>
    public string Name => "int4";

    /// <summary>Values per block along K: a power of two, at least 16 (ORT's constraint); 32 or 128 are the usual.</summary>
    public int BlockSize { get; init; } = 32;

    /// <summary>Symmetric blocks (no zero points; codes −8…7 around 8) or asymmetric ones (min to max, a zero point per block).</summary>
    public bool Symmetric { get; init; } = true;

    /// <summary>MatMulNBits' accuracy_level: 0 leaves ORT's default (float compute), 4 lets its CPU kernel quantize A to int8.</summary>
    public int AccuracyLevel { get; init; }

    /// <inheritdoc/>
    public ISet<string> Exclude { get; init; } = new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the MatMuls it replaced.</summary>
    /// <exception cref="OptimizeException">The block size is not a power of two of at least 16.</exception>
    public List<string> Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (BlockSize < 16 || (BlockSize & (BlockSize - 1)) != 0)
        {
            throw new OptimizeException($"int4 block size {BlockSize}: must be a power of two, at least 16");
        }
        ModelProto proto = model.Proto;
        GraphProto graph = proto.Graph;
        var names = new NameScope(graph);
        var packed = new Dictionary<string, (string B, string Scales, string? ZeroPoints, long K, long N)>(StringComparer.Ordinal);
        var quantized = new List<string>();
        for (int i = 0; i < graph.Node.Count; i++)
        {
            NodeProto node = graph.Node[i];
            if (node.OpType != "MatMul" || !QuantizedGraph.IsDefaultDomain(node) || Exclude.Contains(node.Name) || node.Input.Count != 2
                || Initializers.FindConstant(proto, node.Input[0]) is not null
                || Initializers.FindConstant(proto, node.Input[1]) is not { } weight || weight.Dims.Count != 2
                || Initializers.ReadFloats(weight) is not { } values
                || Initializers.Shape(graph, node.Input[0]) is { Length: < 2 })
            {
                continue;
            }
            if (!packed.TryGetValue(weight.Name, out var w))
            {
                long k = weight.Dims[0], n = weight.Dims[1];
                Int4Blocks blocks = Quantize(values, (int)k, (int)n, BlockSize, Symmetric);
                w = (names.Next(weight.Name + "_int4"), names.Next(weight.Name + "_int4_scales"), Symmetric ? null : names.Next(weight.Name + "_int4_zero_points"), k, n);
                packed[weight.Name] = w;
                int blockCount = blocks.Scales.Length / (int)n;
                var b = new TensorProto { Name = w.B, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.Codes) };
                b.Dims.AddRange([n, blockCount, BlockSize / 2]);
                Initializers.Add(proto, b);
                Initializers.Add(proto, Initializers.FloatTensor(w.Scales, [blocks.Scales.Length], blocks.Scales));
                if (w.ZeroPoints is not null)
                {
                    var zp = new TensorProto { Name = w.ZeroPoints, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.ZeroPoints!) };
                    zp.Dims.Add(blocks.ZeroPoints!.Length);
                    Initializers.Add(proto, zp);
                }
            }
            NodeProto nbits = QuantizedGraph.Node("MatMulNBits", names.Next(node.Name + "_int4"),
                    w.ZeroPoints is null ? [node.Input[0], w.B, w.Scales] : [node.Input[0], w.B, w.Scales, w.ZeroPoints], [node.Output[0]], QuantizedGraph.MicrosoftDomain)
                .With("K", w.K).With("N", w.N).With("bits", 4).With("block_size", BlockSize);
            if (AccuracyLevel != 0)
            {
                nbits.With("accuracy_level", AccuracyLevel);
            }
            graph.Node[i] = nbits;
            quantized.Add(node.Name);
        }
        if (quantized.Count > 0)
        {
            QuantizedGraph.ImportMicrosoftDomain(proto);
            Initializers.RemoveUnread(graph, packed.Keys);
        }
        return quantized;
    }

    /// <summary>W [K, N] (row-major) in MatMulNBits' layout: codes [N, blocks, block/2], scales [N · blocks], zero points [N · ceil(blocks/2)] or null.</summary>
    internal static Int4Blocks Quantize(float[] w, int k, int n, int blockSize, bool symmetric)
    {
        int blocks = (k + blockSize - 1) / blockSize;
        int blob = blockSize / 2;
        var codes = new byte[n * blocks * blob];
        var scales = new float[n * blocks];
        int zpRow = (blocks + 1) / 2;
        byte[]? zeroPoints = symmetric ? null : new byte[n * zpRow];
        Span<float> block = stackalloc float[blockSize];
        for (int col = 0; col < n; col++)
        {
            for (int b = 0; b < blocks; b++)
            {
                int start = b * blockSize, length = Math.Min(blockSize, k - start);
                for (int j = 0; j < length; j++)
                {
                    block[j] = w[((start + j) * n) + col];
                }
                float scale;
                int zeroPoint;
                if (symmetric)
                {
                    // The value of largest magnitude maps to −8 exactly (the full signed range), the rest round within −8…7.
                    float extreme = 0;
                    for (int j = 0; j < length; j++)
                    {
                        if (MathF.Abs(block[j]) > MathF.Abs(extreme))
                        {
                            extreme = block[j];
                        }
                    }
                    scale = extreme / -8f;
                    zeroPoint = 8;
                }
                else
                {
                    float min = 0, max = 0;
                    for (int j = 0; j < length; j++)
                    {
                        min = Math.Min(min, block[j]);
                        max = Math.Max(max, block[j]);
                    }
                    scale = (max - min) / 15f;
                    zeroPoint = scale == 0 ? 8 : (int)Math.Clamp(MathF.Round(-min / scale, MidpointRounding.ToEven), 0f, 15f);
                }
                scales[(col * blocks) + b] = scale;
                float inverse = scale == 0 ? 0 : 1 / scale;
                int offset = ((col * blocks) + b) * blob;
                for (int j = 0; j < blockSize; j++)
                {
                    int code = j < length ? (int)Math.Clamp(MathF.Round(block[j] * inverse, MidpointRounding.ToEven) + zeroPoint, 0f, 15f) : zeroPoint;
                    codes[offset + (j / 2)] |= (byte)((j % 2 == 0) ? code : code << 4);
                }
                if (zeroPoints is not null)
                {
                    zeroPoints[(col * zpRow) + (b / 2)] |= (byte)(b % 2 == 0 ? zeroPoint : zeroPoint << 4);
                }
            }
        }
        return new Int4Blocks(codes, scales, zeroPoints);
    }
}

/// <summary>One weight in MatMulNBits' 4-bit layout.</summary>
internal sealed record Int4Blocks(byte[] Codes, float[] Scales, byte[]? ZeroPoints);
