using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;

namespace Kiln.Serve.Inference;

/// <summary>
/// A BERT-style ONNX model with int64 inputs <c>input_ids</c> and optionally <c>attention_mask</c> and
/// <c>token_type_ids</c>, opened through <see cref="OnnxSessionFactory"/> (the CUDA provider when this build has it and
/// model-config.yaml did not ask for the CPU) and shared by every worker thread. A batch runs as one session call, its
/// inputs padded to the longest with <c>[PAD]</c> and an attention mask of zeros; a model without an
/// <c>attention_mask</c> input runs its inputs one by one instead, since padding would change its results.
/// </summary>
internal sealed class TextModel : IDisposable
{
    private readonly InferenceSession _session;
    private readonly string _idsName;
    private readonly string? _maskName;
    private readonly string? _typesName;
    private readonly bool _onGpu;

    private TextModel(InferenceSession session, bool onGpu, string idsName, string? maskName, string? typesName, string outputName)
    {
        _session = session;
        _onGpu = onGpu;
        _idsName = idsName;
        _maskName = maskName;
        _typesName = typesName;
        OutputName = outputName;
    }

    /// <summary>The output the handler reads.</summary>
    public string OutputName { get; }

    /// <summary><c>gpu</c> on the CUDA provider, else <c>cpu</c>.</summary>
    public string DeviceType => _onGpu ? "gpu" : "cpu";

    /// <summary>
    /// Opens the archive's ONNX model and picks its output: model-config.yaml's <c>outputName</c>, else the first of
    /// <paramref name="preferredOutputs"/> the model has, else its first float32 output.
    /// </summary>
    /// <exception cref="ServeException">400 <c>ModelException</c>: not an ONNX model, or inputs/outputs the text handlers cannot feed or read.</exception>
    public static TextModel Open(HandlerContext context, string handler, params string[] preferredOutputs)
    {
        string path = context.SerializedFile;
        string file = Path.GetFileName(path);
        if (!string.Equals(Path.GetExtension(path), ".onnx", StringComparison.OrdinalIgnoreCase))
        {
            throw new ServeException(400, "ModelException", $"{handler} runs ONNX models (.onnx); {file} is not one.");
        }
        (OnnxSessionOptions settings, bool onGpu) = context.Backend.OnnxSession(path);
        InferenceSession session;
        try
        {
            session = OnnxSessionFactory.Open(path, settings);
        }
        catch (KilnRuntimeException ex)
        {
            throw new ServeException(400, "ModelException", $"{handler}: {ex.Message}", ex);
        }
        try
        {
            string? ids = null, mask = null, types = null;
            foreach ((string name, NodeMetadata input) in session.InputMetadata)
            {
                if (input.ElementType != typeof(long))
                {
                    throw new ServeException(400, "ModelException", $"{handler}: {file}'s input '{name}' is {input.ElementType.Name}; text models take int64 input_ids, attention_mask and token_type_ids.");
                }
                switch (name)
                {
                    case "input_ids": ids = name; break;
                    case "attention_mask": mask = name; break;
                    case "token_type_ids": types = name; break;
                    default:
                        if (session.InputMetadata.Count == 1)
                        {
                            ids = name; // a lone int64 input can only be the token ids
                            break;
                        }
                        throw new ServeException(400, "ModelException", $"{handler}: {file} has input '{name}'; text models take input_ids, attention_mask and token_type_ids only.");
                }
            }
            if (ids is null)
            {
                throw new ServeException(400, "ModelException", $"{handler}: {file} has no input_ids input (it has {string.Join(", ", session.InputMetadata.Keys)}).");
            }
            string[] floats = [.. session.OutputMetadata.Where(o => o.Value.ElementType == typeof(float)).Select(o => o.Key)];
            string? output = TextConfig.String(context, "outputName")
                ?? preferredOutputs.FirstOrDefault(floats.Contains)
                ?? floats.FirstOrDefault();
            if (output is null || !floats.Contains(output))
            {
                throw new ServeException(400, "ModelException", output is null
                    ? $"{handler}: {file} has no float32 output."
                    : $"{handler}: model-config.yaml names outputName '{output}', which is not a float32 output of {file} ({string.Join(", ", floats)}).");
            }
            return new TextModel(session, onGpu, ids, mask, types, output);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs the token id sequences and returns the output, rows in input order: <c>[N,…]</c> for one session call over
    /// the padded batch. Row <c>n</c>'s first <c>tokens[n].Length</c> positions are its real tokens.
    /// </summary>
    /// <exception cref="ServeException">503 when ONNX Runtime fails, or the output's first dimension is not the batch.</exception>
    public TextOutput Run(IReadOnlyList<int[]> tokens, int paddingId)
    {
        if (_maskName is null && tokens.Count > 1)
        {
            TextOutput[] parts = [.. tokens.Select(t => RunPadded([t], paddingId))];
            return TextOutput.Concat(parts);
        }
        return RunPadded(tokens, paddingId);
    }

    private TextOutput RunPadded(IReadOnlyList<int[]> tokens, int paddingId)
    {
        int rows = tokens.Count;
        int columns = tokens.Max(t => t.Length);
        long[] ids = new long[rows * columns];
        long[] mask = new long[rows * columns];
        for (int r = 0; r < rows; r++)
        {
            int[] row = tokens[r];
            int start = r * columns;
            for (int c = 0; c < columns; c++)
            {
                bool real = c < row.Length;
                ids[start + c] = real ? row[c] : paddingId;
                mask[start + c] = real ? 1 : 0;
            }
        }
        long[] shape = [rows, columns];
        var names = new List<string>(3) { _idsName };
        var values = new List<OrtValue>(3);
        try
        {
            values.Add(OrtValue.CreateTensorValueFromMemory(ids, shape));
            if (_maskName is not null)
            {
                names.Add(_maskName);
                values.Add(OrtValue.CreateTensorValueFromMemory(mask, shape));
            }
            if (_typesName is not null)
            {
                names.Add(_typesName);
                values.Add(OrtValue.CreateTensorValueFromMemory(new long[rows * columns], shape)); // one segment
            }
            using var options = new RunOptions();
            using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options, names, values, [OutputName]);
            OrtValue output = outputs[0];
            long[] outputShape = output.GetTensorTypeAndShape().Shape;
            if (outputShape.Length == 0 || outputShape[0] != rows)
            {
                throw new ServeException(503, "InternalServerException", $"The model's output '{OutputName}' is shaped [{string.Join(",", outputShape)}]; its first dimension must be the batch ({rows}).");
            }
            return new TextOutput(output.GetTensorDataAsSpan<float>().ToArray(), outputShape, [.. tokens.Select(t => t.Length)]);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new ServeException(503, "InternalServerException", $"Prediction failed: {ex.Message}", ex);
        }
        finally
        {
            foreach (OrtValue value in values)
            {
                value.Dispose();
            }
        }
    }

    public void Dispose() => _session.Dispose();
}

/// <summary>A text model's output for a batch: values, shape (<c>[N,…]</c>) and each row's number of real tokens.</summary>
internal sealed record TextOutput(float[] Data, long[] Shape, int[] Lengths)
{
    /// <summary>Values per row.</summary>
    public int RowSize => Shape.Length == 0 || Shape[0] == 0 ? 0 : Data.Length / (int)Shape[0];

    /// <summary>Row <paramref name="row"/>'s values.</summary>
    public ReadOnlySpan<float> Row(int row) => Data.AsSpan(row * RowSize, RowSize);

    /// <summary>
    /// Joins single-row outputs. Token-level outputs (<c>[1,T,…]</c>) of different lengths are padded with zeros to the
    /// longest, which the pooling never reads since each row keeps its own length.
    /// </summary>
    public static TextOutput Concat(IReadOnlyList<TextOutput> parts)
    {
        long[] first = parts[0].Shape;
        if (first.Length < 3)
        {
            long[] shape = [.. first];
            shape[0] = parts.Sum(p => p.Shape[0]);
            return new TextOutput([.. parts.SelectMany(p => p.Data)], shape, [.. parts.SelectMany(p => p.Lengths)]);
        }
        long steps = parts.Max(p => p.Shape[1]);
        int inner = (int)first.Skip(2).Aggregate(1L, (a, b) => a * b);
        long[] joined = [.. first];
        joined[0] = parts.Count;
        joined[1] = steps;
        float[] data = new float[parts.Count * steps * inner];
        for (int i = 0; i < parts.Count; i++)
        {
            parts[i].Data.CopyTo(data.AsSpan((int)(i * steps * inner)));
        }
        return new TextOutput(data, joined, [.. parts.SelectMany(p => p.Lengths)]);
    }
}
