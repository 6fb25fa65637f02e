using Google.Protobuf;
using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>
/// Weight-only int4: every MatMul whose second input is a 2-D float initializer W [K, N] (and every Gemm with transA 0
/// and a constant B: B transposed when transB, alpha folded into the scales, beta · C added after) becomes ONNX Runtime's
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

    /// <summary>The op types this quantizer can rewrite.</summary>
    public static IReadOnlySet<string> SupportedOpTypes { get; } = new HashSet<string>(["MatMul", "Gemm", "Gather"], StringComparer.Ordinal);

    /// <summary>The op types rewritten unless told otherwise: MatMul and Gemm (embedding tables stay float).</summary>
    public static IReadOnlySet<string> DefaultOpTypes { get; } = new HashSet<string>(["MatMul", "Gemm"], StringComparer.Ordinal);

    /// <summary>
    /// Which op types to rewrite, from <see cref="SupportedOpTypes"/>. A Gather of a 2-D float table along axis 0 becomes
    /// <c>com.microsoft.GatherBlockQuantized</c> (the table's width a multiple of <see cref="BlockSize"/>).
    /// </summary>
    public IReadOnlySet<string> OpTypes { get; init; } = DefaultOpTypes;

    /// <summary>Rewrites <paramref name="model"/> in place; returns the names of the MatMuls and Gemms it replaced.</summary>
    /// <exception cref="OptimizeException">The block size is not a power of two of at least 16.</exception>
    public List<string> Apply(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (BlockSize < 16 || (BlockSize & (BlockSize - 1)) != 0)
        {
            throw new OptimizeException($"int4 block size {BlockSize}: must be a power of two, at least 16");
        }
        if (OpTypes.FirstOrDefault(o => !SupportedOpTypes.Contains(o)) is { } unsupported)
        {
            throw new OptimizeException($"int4 cannot quantize {unsupported} nodes (supported: {string.Join(", ", SupportedOpTypes)})");
        }
        ModelProto proto = model.Proto;
        GraphProto graph = proto.Graph;
        var names = new NameScope(graph);
        var packed = new Dictionary<string, (string B, string Scales, string? ZeroPoints, long K, long N)>(StringComparer.Ordinal);
        var replaced = new HashSet<string>(StringComparer.Ordinal);
        var quantized = new List<string>();
        var rewritten = new List<NodeProto>(graph.Node.Count);

        (string B, string Scales, string? ZeroPoints, long K, long N) Pack(TensorProto weight, float[] values, bool transposed, float alpha)
        {
            string key = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{weight.Name}|{transposed}|{alpha}");
            if (packed.TryGetValue(key, out var w))
            {
                return w;
            }
            int k = (int)weight.Dims[transposed ? 1 : 0], n = (int)weight.Dims[transposed ? 0 : 1];
            Int4Blocks blocks = Quantize(transposed ? Transpose(values, n, k) : values, k, n, BlockSize, Symmetric);
            for (int s = 0; s < blocks.Scales.Length && alpha != 1; s++)
            {
                blocks.Scales[s] *= alpha;
            }
            w = (names.Next(weight.Name + "_int4"), names.Next(weight.Name + "_int4_scales"), Symmetric ? null : names.Next(weight.Name + "_int4_zero_points"), k, n);
            packed[key] = w;
            replaced.Add(weight.Name);
            var b = new TensorProto { Name = w.B, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.Codes) };
            b.Dims.AddRange([n, blocks.Scales.Length / n, BlockSize / 2]);
            Initializers.Add(proto, b);
            Initializers.Add(proto, Initializers.FloatTensor(w.Scales, [blocks.Scales.Length], blocks.Scales));
            if (w.ZeroPoints is not null)
            {
                var zp = new TensorProto { Name = w.ZeroPoints, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.ZeroPoints!) };
                zp.Dims.Add(blocks.ZeroPoints!.Length);
                Initializers.Add(proto, zp);
            }
            return w;
        }

        // An embedding table [rows, width] in GatherBlockQuantized's layout: uint8 [rows, width / 2], two codes a byte
        // (the first in the low nibble), float scales [rows, width / block] and, when asymmetric, uint8 zero points
        // [rows, ⌈blocks / 2⌉] packed the same way (symmetric: none, ORT's default 8). It is the MatMulNBits packing of
        // the transposed table: its K runs along a row.
        (string Codes, string Scales, string? ZeroPoints) PackTable(TensorProto table, float[] values)
        {
            string key = table.Name + "|rows";
            if (packed.TryGetValue(key, out var w))
            {
                return (w.B, w.Scales, w.ZeroPoints);
            }
            int rows = (int)table.Dims[0], width = (int)table.Dims[1], blockCount = width / BlockSize;
            Int4Blocks blocks = Quantize(Transpose(values, rows, width), width, rows, BlockSize, Symmetric);
            w = (names.Next(table.Name + "_int4"), names.Next(table.Name + "_int4_scales"), Symmetric ? null : names.Next(table.Name + "_int4_zero_points"), width, rows);
            packed[key] = w;
            replaced.Add(table.Name);
            var codes = new TensorProto { Name = w.B, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.Codes) };
            codes.Dims.AddRange([rows, width / 2]);
            Initializers.Add(proto, codes);
            Initializers.Add(proto, Initializers.FloatTensor(w.Scales, [rows, blockCount], blocks.Scales));
            if (w.ZeroPoints is not null)
            {
                var zp = new TensorProto { Name = w.ZeroPoints, DataType = (int)TensorProto.Types.DataType.Uint8, RawData = ByteString.CopyFrom(blocks.ZeroPoints!) };
                zp.Dims.AddRange([rows, (blockCount + 1) / 2]);
                Initializers.Add(proto, zp);
            }
            return (w.B, w.Scales, w.ZeroPoints);
        }

        NodeProto NBits(string name, string a, (string B, string Scales, string? ZeroPoints, long K, long N) w, string output)
        {
            NodeProto nbits = QuantizedGraph.Node("MatMulNBits", names.Next(name + "_int4"),
                    w.ZeroPoints is null ? [a, w.B, w.Scales] : [a, w.B, w.Scales, w.ZeroPoints], [output], QuantizedGraph.MicrosoftDomain)
                .With("K", w.K).With("N", w.N).With("bits", 4).With("block_size", BlockSize);
            return AccuracyLevel != 0 ? nbits.With("accuracy_level", AccuracyLevel) : nbits;
        }

        foreach (NodeProto node in graph.Node)
        {
            if (node.OpType == "Gather" && OpTypes.Contains("Gather") && QuantizedGraph.IsDefaultDomain(node) && !Exclude.Contains(node.Name)
                && GatherTable(proto, node) is { } table)
            {
                (string codes, string scales, string? zeroPoints) = PackTable(table.Tensor, table.Values);
                rewritten.Add(QuantizedGraph.Node("GatherBlockQuantized", names.Next(node.Name + "_int4"),
                        zeroPoints is null ? [codes, node.Input[1], scales] : [codes, node.Input[1], scales, zeroPoints], [node.Output[0]], QuantizedGraph.MicrosoftDomain)
                    .With("gather_axis", 0).With("quantize_axis", 1).With("block_size", BlockSize).With("bits", 4));
                quantized.Add(node.Name);
                continue;
            }
            TensorProto? weight = null;
            float[]? values = null;
            bool candidate = node.OpType is "MatMul" or "Gemm" && OpTypes.Contains(node.OpType) && QuantizedGraph.IsDefaultDomain(node) && !Exclude.Contains(node.Name) && node.Input.Count >= 2
                && Initializers.FindConstant(proto, node.Input[0]) is null
                && (weight = Initializers.FindConstant(proto, node.Input[1])) is { Dims.Count: 2 } && (values = Initializers.ReadFloats(weight)) is not null
                && Initializers.Shape(graph, node.Input[0]) is not { Length: < 2 };
            if (candidate && node.OpType == "MatMul" && node.Input.Count == 2)
            {
                rewritten.Add(NBits(node.Name, node.Input[0], Pack(weight!, values!, false, 1f), node.Output[0]));
                quantized.Add(node.Name);
            }
            else if (candidate && node.OpType == "Gemm" && QuantizedGraph.IntAttribute(node, "transA", 0) == 0)
            {
                // Gemm: alpha folded into the scales, beta · C added after.
                float alpha = QuantizedGraph.FloatAttribute(node, "alpha", 1f), beta = QuantizedGraph.FloatAttribute(node, "beta", 1f);
                string? c = node.Input.Count > 2 && node.Input[2].Length > 0 && beta != 0 ? node.Input[2] : null;
                float[]? bias = c is null || beta == 1 ? null : Initializers.FindConstant(proto, c) is { } t ? Initializers.ReadFloats(t) : null;
                if (c is not null && beta != 1 && bias is null)
                {
                    rewritten.Add(node);
                    continue;
                }
                var w = Pack(weight!, values!, QuantizedGraph.IntAttribute(node, "transB", 0) != 0, alpha);
                string product = c is null ? node.Output[0] : names.Next(node.Output[0] + "_unbiased");
                rewritten.Add(NBits(node.Name, node.Input[0], w, product));
                if (c is not null)
                {
                    if (bias is not null)
                    {
                        string scaled = names.Next(c + "_beta");
                        Initializers.Add(proto, Initializers.FloatTensor(scaled, Initializers.FindConstant(proto, c)!.Dims, [.. bias.Select(v => v * beta)]));
                        replaced.Add(c);
                        c = scaled;
                    }
                    rewritten.Add(QuantizedGraph.Node("Add", names.Next(node.Name + "_bias"), [product, c], [node.Output[0]]));
                }
                quantized.Add(node.Name);
            }
            else
            {
                rewritten.Add(node);
            }
        }
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
        if (quantized.Count > 0)
        {
            QuantizedGraph.ImportMicrosoftDomain(proto);
            Initializers.RemoveUnread(graph, replaced);
        }
        return quantized;
    }

    /// <summary>
    /// The table of a Gather that GatherBlockQuantized can take: a 2-D float initializer gathered along axis 0, its width a
    /// multiple of the block size.
    /// </summary>
    private (TensorProto Tensor, float[] Values)? GatherTable(ModelProto proto, NodeProto node)
    {
        if (node.Input.Count != 2 || QuantizedGraph.IntAttribute(node, "axis", 0) != 0
            || Initializers.FindConstant(proto, node.Input[0]) is not { Dims.Count: 2 } table || table.Dims[1] % BlockSize != 0
            || Initializers.ReadFloats(table) is not { } values)
        {
            return null;
        }
        return (table, values);
    }

    private static float[] Transpose(float[] values, int rows, int columns)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                result[(c * rows) + r] = values[(r * columns) + c];
            }
        }
        return result;
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
