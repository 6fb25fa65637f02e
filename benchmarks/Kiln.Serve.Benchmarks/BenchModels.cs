using System.Collections.Concurrent;
using Kiln.Runtime;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Serve.Benchmarks;

/// <summary>A model the benchmark serves and also calls in-process for the ceiling.</summary>
internal abstract class BenchModel : IDisposable
{
    /// <summary>One line saying what the model is and where it runs.</summary>
    public abstract string Description { get; }

    /// <summary>The serialized file that goes into the archive (its extension picks the server's backend).</summary>
    public abstract string SerializedFile { get; }

    /// <summary>model-config.yaml <c>deviceType</c> for the server, so it runs where the ceiling runs.</summary>
    public abstract string DeviceType { get; }

    /// <summary>Whether a batch of B runs as one tensor stacked along dimension 0 (else B calls of one item each).</summary>
    public abstract bool StacksBatch { get; }

    /// <summary>Largest relative difference accepted between the server's answer and the in-process one.</summary>
    public virtual double Tolerance => 1e-4;

    /// <summary>One request's input.</summary>
    public float[] Input { get; protected init; } = [];

    public long[] InputShape { get; protected init; } = [];

    /// <summary>The first output for <see cref="Input"/>, computed in-process.</summary>
    public abstract float[] RunOnce();

    /// <summary>
    /// A call of <paramref name="batch"/> copies of <see cref="Input"/> for one ceiling thread (it may keep buffers):
    /// one stacked run when <see cref="StacksBatch"/>, otherwise <paramref name="batch"/> runs of one item, as the server
    /// does for a model with a fixed batch dimension.
    /// </summary>
    public abstract Action CreateCall(int batch);

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected abstract void Dispose(bool disposing);

    protected static float[] Repeat(float[] item, int times)
    {
        float[] data = new float[item.Length * times];
        for (int i = 0; i < times; i++)
        {
            item.CopyTo(data, i * item.Length);
        }
        return data;
    }

    protected static float[] RandomInput(int count, int seed, float scale)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() * 2) - 1) * scale)];
    }
}

/// <summary>An ONNX model through one ONNX Runtime session opened as the server opens it (<see cref="OnnxSessionFactory"/>, CPU, same intra-op threads).</summary>
internal sealed class OnnxBenchModel : BenchModel
{
    private readonly InferenceSession _session;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private readonly ConcurrentBag<IDisposable> _owned = [];

    public OnnxBenchModel(string path, string what, float[] input, long[] inputShape, int intraOpThreads)
    {
        SerializedFile = path;
        Input = input;
        InputShape = inputShape;
        _session = OnnxSessionFactory.Open(path, new OnnxSessionOptions { IntraOpThreads = intraOpThreads, Provider = OnnxProvider.Cpu });
        (string name, NodeMetadata metadata) = _session.InputMetadata.Single();
        _inputNames = [name];
        _outputNames = [.. _session.OutputMetadata.Where(o => o.Value.ElementType == typeof(float)).Select(o => o.Key)];
        StacksBatch = metadata.Dimensions.Length > 0 && metadata.Dimensions[0] <= 0;
        string dims = string.Join(",", metadata.Dimensions.Select(d => d <= 0 ? "N" : d.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Description = $"{what} ({Path.GetFileName(path)}, input '{name}' [{dims}], ONNX Runtime {OnnxSessionFactory.Version} CPU, intra-op threads {intraOpThreads})";
    }

    public override string Description { get; }

    public override string SerializedFile { get; }

    public override string DeviceType => "cpu";

    public override bool StacksBatch { get; }

    public override float[] RunOnce()
    {
        using OrtValue value = OrtValue.CreateTensorValueFromMemory(Input, InputShape);
        using var options = new RunOptions();
        using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options, _inputNames, [value], _outputNames);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public override Action CreateCall(int batch)
    {
        int runs = StacksBatch ? 1 : batch;
        long[] shape = [.. InputShape];
        if (StacksBatch)
        {
            shape[0] *= batch;
        }
        OrtValue value = OrtValue.CreateTensorValueFromMemory(StacksBatch ? Repeat(Input, batch) : Input, shape);
        var options = new RunOptions();
        _owned.Add(value);
        _owned.Add(options);
        OrtValue[] inputs = [value];
        return () =>
        {
            for (int i = 0; i < runs; i++)
            {
                using IDisposableReadOnlyCollection<OrtValue> outputs = _session.Run(options, _inputNames, inputs, _outputNames);
            }
        };
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (IDisposable owned in _owned)
            {
                owned.Dispose();
            }
            _session.Dispose();
        }
    }
}

/// <summary>
/// A TorchScript file through TorchSharp's <c>torch.jit.load</c> on the same device the server is asked to use: each call
/// builds the input tensor from a float array, moves it to the device, runs <c>forward</c> in inference mode and copies the
/// output back to a float array, as a server has to.
/// </summary>
internal sealed class TorchScriptBenchModel : BenchModel
{
    private readonly jit.ScriptModule<Tensor, Tensor> _module;
    private readonly Device _device;

    public TorchScriptBenchModel(string path, long[] inputShape, string? device, int intraOpThreads)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"TorchScript file {path} does not exist; make one with benchmarks/serve/resnet50_torchscript.py.", path);
        }
        LibTorchInfo libtorch = TorchRuntime.EnsureInitialized(TorchRuntimeOptions.FromEnvironment());
        bool cuda = device switch
        {
            "cuda" when !torch.cuda.is_available() => throw new InvalidOperationException($"--device cuda, but libtorch {libtorch.Version} ({libtorch.Path}) sees no CUDA device{(libtorch.CudaProblem is { } p ? ": " + p : "")}."),
            "cuda" => true,
            "cpu" => false,
            _ => torch.cuda.is_available(),
        };
        _device = cuda ? new Device(TorchSharp.DeviceType.CUDA, 0) : torch.CPU;
        SerializedFile = path;
        InputShape = inputShape;
        Input = RandomInput((int)inputShape.Aggregate(1L, (a, b) => a * b), seed: 7, scale: 1f);
        if (intraOpThreads > 0)
        {
            // What the server's TorchScript backend does with ServeOptions.IntraOpThreads: libtorch's one intra-op pool per process.
            torch.set_num_threads(intraOpThreads);
        }
        _module = torch.jit.load<Tensor, Tensor>(path, cuda ? TorchSharp.DeviceType.CUDA : TorchSharp.DeviceType.CPU, cuda ? 0 : -1);
        _module.eval();
        Description = $"TorchScript {Path.GetFileName(path)}, input [{string.Join(",", inputShape)}] float32, libtorch {libtorch.Version} ({libtorch.Source}) on {_device}, torch threads {torch.get_num_threads()}";
    }

    public override string Description { get; }

    public override string SerializedFile { get; }

    public override string DeviceType => _device.type == TorchSharp.DeviceType.CUDA ? "gpu" : "cpu";

    public override bool StacksBatch => true;

    // GPU convolutions (cuDNN algorithm choice, TF32) differ from run to run more than CPU kernels do.
    public override double Tolerance => 2e-2;

    public override float[] RunOnce() => Forward(Input, InputShape);

    public override Action CreateCall(int batch)
    {
        float[] data = Repeat(Input, batch);
        long[] shape = [.. InputShape];
        shape[0] *= batch;
        return () => Forward(data, shape);
    }

    private float[] Forward(float[] data, long[] shape)
    {
        using DisposeScope scope = torch.NewDisposeScope();
        using IDisposable inference = torch.inference_mode();
        Tensor input = torch.tensor(data, shape).to(_device);
        Tensor output = _module.forward(input);
        return output.cpu().data<float>().ToArray();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _module.Dispose();
        }
    }
}
