using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kiln.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Serve.Inference;

/// <summary>
/// A TorchScript archive (saved by <c>torch.jit.save</c>) loaded once through TorchSharp's <c>torch.jit.load</c>, put in
/// eval mode and shared by every worker thread of its model version: libtorch runs a TorchScript module's
/// <c>forward</c> from several threads at once for inference, and each call here keeps its tensors in its own dispose
/// scope on its own thread. Runs on CUDA when the libtorch that <see cref="TorchRuntime"/> loaded has it and the model
/// did not ask for the CPU (model-config.yaml <c>deviceType: cpu</c>), else on the CPU.
/// </summary>
/// <remarks>
/// TorchScript declares no input shapes: <see cref="InputDimensions"/> is empty, so any shape reaches the model, a
/// shape the model rejects is a 400 for that request, and batches are stacked along dimension 0. The forward takes one
/// float32 tensor and returns a tensor, or a tuple or list of tensors, named <c>output__0</c>, <c>output__1</c>, …
/// (Triton's convention); other element types are converted to float32. How many outputs there are is only known
/// after the first forward: until then <see cref="OutputNames"/> is <c>output__0</c> alone, and every later forward
/// must return as many tensors as the first.
/// </remarks>
internal sealed class TorchScriptBackend : ModelBackend
{
    private const int MaxComplaintLength = 300;

    private readonly jit.ScriptModule _module;
    private readonly Device _device;
    private readonly string _file;
    private readonly Lock _outputsGate = new();
    private volatile OutputInfo? _outputs;

    public TorchScriptBackend(string path, BackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        _file = Path.GetFileName(path);
        LibTorchInfo libtorch;
        try
        {
            libtorch = TorchRuntime.EnsureInitialized(TorchRuntimeOptions.FromEnvironment());
        }
        catch (KilnRuntimeException ex)
        {
            throw new ServeException(500, "InternalServerException", $"{_file} needs libtorch, which does not load here: {ex.Message}", ex);
        }
        bool onGpu = options.DeviceType != "cpu" && libtorch.CudaAvailable && torch.cuda.is_available();
        _device = onGpu ? torch.device(TorchSharp.DeviceType.CUDA, options.DeviceId) : torch.CPU;
        if (options.IntraOpThreads > 0 && torch.get_num_threads() != options.IntraOpThreads)
        {
            // libtorch has one intra-op thread pool per process: this is a server-wide setting, as ServeOptions is.
            torch.set_num_threads(options.IntraOpThreads);
        }
        try
        {
            _module = torch.jit.load(path, _device);
        }
        catch (Exception ex) when (ex is ExternalException or FileNotFoundException)
        {
            throw new ServeException(400, "ModelException",
                $"Serialized file {_file} is not a TorchScript archive ({FirstLine(ex.Message)}). Save the model with " +
                "torch.jit.save(torch.jit.script(model), …) or torch.jit.trace; a torch.save state_dict or pickled eager model needs Python and cannot be served.",
                ex);
        }
        _module.eval();
    }

    public override string Platform => "pytorch_torchscript";

    public override string DeviceType => _device.type == TorchSharp.DeviceType.CUDA ? "gpu" : "cpu";

    /// <summary>Triton's name for a TorchScript model's first input.</summary>
    public override string InputName => "input__0";

    /// <summary>Empty: TorchScript declares no input shapes, so requests are not checked before the model sees them.</summary>
    public override long[] InputDimensions => [];

    /// <summary><c>output__0</c>, <c>output__1</c>, …: one per tensor the first forward returned (<c>output__0</c> before it).</summary>
    public override IReadOnlyList<string> OutputNames => _outputs?.Names ?? ["output__0"];

    /// <summary>
    /// Each output's dimensions, all -1: TorchScript declares none. The rank is the one the first forward returned;
    /// before it, <c>[-1]</c> (rank unknown).
    /// </summary>
    public override IReadOnlyList<long[]> OutputDimensions => _outputs?.Dimensions ?? [[-1]];

    /// <summary>TorchScript does not declare the batch dimension; every model served here takes batches along dimension 0.</summary>
    protected override bool BatchDimensionIsDynamic => true;

    protected override FloatTensor[] RunOne(FloatTensor input)
    {
        using DisposeScope scope = torch.NewDisposeScope();
        using IDisposable inference = torch.inference_mode();
        Tensor x = torch.tensor(input.Data, input.Shape, ScalarType.Float32, _device);
        object result;
        try
        {
            result = _module.forward(x);
        }
        catch (ExternalException ex)
        {
            string complaint = Complaint(ex.Message);
            if (complaint.Contains("out of memory", StringComparison.OrdinalIgnoreCase))
            {
                throw new ServeException(503, "ServiceUnavailableException", $"{_file} ran out of device memory: {complaint}", ex);
            }
            throw ServeException.BadRequest($"The model {_file} rejected the input shaped {input.ShapeText}: {complaint}");
        }
        var tensors = new List<Tensor>();
        Collect(result, tensors);
        if (tensors.Count == 0)
        {
            throw new ServeException($"{_file}'s forward returned no tensor; a tensor, or a tuple or list of tensors, is served.");
        }
        var outputs = new FloatTensor[tensors.Count];
        for (int i = 0; i < outputs.Length; i++)
        {
            Tensor host = tensors[i].to_type(ScalarType.Float32).cpu().contiguous();
            outputs[i] = new FloatTensor(host.data<float>().ToArray(), host.shape);
        }
        RecordOutputs(outputs);
        return outputs;
    }

    /// <summary>Flattens a forward's result (a tensor, or tuples/lists of them, as TorchSharp returns them) in order.</summary>
    private void Collect(object? result, List<Tensor> tensors)
    {
        switch (result)
        {
            case Tensor tensor:
                tensors.Add(tensor);
                break;
            case Tensor[] list:
                tensors.AddRange(list);
                break;
            case ITuple tuple:
                for (int i = 0; i < tuple.Length; i++)
                {
                    Collect(tuple[i], tensors);
                }
                break;
            case object[] items:
                foreach (object item in items)
                {
                    Collect(item, tensors);
                }
                break;
            default:
                (result as IDisposable)?.Dispose();
                throw new ServeException($"{_file}'s forward returned {result?.GetType().Name ?? "None"}; a tensor, or a tuple or list of tensors, is served.");
        }
    }

    /// <summary>Fixes the outputs' names and ranks at the first forward; later forwards must return as many tensors.</summary>
    private void RecordOutputs(FloatTensor[] outputs)
    {
        OutputInfo? known = _outputs;
        if (known is null)
        {
            lock (_outputsGate)
            {
                _outputs ??= new OutputInfo(
                    [.. Enumerable.Range(0, outputs.Length).Select(i => string.Create(CultureInfo.InvariantCulture, $"output__{i}"))],
                    [.. outputs.Select(o => Enumerable.Repeat(-1L, o.Shape.Length).ToArray())]);
                known = _outputs;
            }
        }
        if (known.Names.Length != outputs.Length)
        {
            throw new ServeException($"{_file}'s forward returned {outputs.Length} tensors where its first call returned {known.Names.Length}; the number of outputs must not change.");
        }
    }

    /// <summary>The line of libtorch's message that says what went wrong: the last "…Error: …" of a TorchScript traceback, else the first line.</summary>
    internal static string Complaint(string message)
    {
        string[] lines = message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        string? error = lines.LastOrDefault(IsErrorLine);
        string complaint = error ?? (lines.Length > 0 ? lines[0] : message);
        return complaint.Length <= MaxComplaintLength ? complaint : complaint[..MaxComplaintLength] + "…";
    }

    private static bool IsErrorLine(string line)
    {
        int colon = line.IndexOf(": ", StringComparison.Ordinal);
        if (colon <= 0)
        {
            return false;
        }
        ReadOnlySpan<char> name = line.AsSpan(0, colon);
        return (name.EndsWith("Error", StringComparison.Ordinal) || name.EndsWith("Exception", StringComparison.Ordinal))
            && !name.ContainsAny(' ', '(', '"');
    }

    private static string FirstLine(string message)
    {
        string trimmed = message.Trim();
        int newline = trimmed.IndexOf('\n', StringComparison.Ordinal);
        return newline < 0 ? trimmed : trimmed[..newline];
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _module.Dispose();
        }
    }

    private sealed record OutputInfo(string[] Names, long[][] Dimensions);
}
