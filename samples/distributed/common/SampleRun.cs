using System.Diagnostics;
using System.Globalization;
using Kiln.Distributed;
using Kiln.Runtime;
using TorchSharp;

namespace Kiln.Samples.Distributed;

/// <summary>Command-line flags of the form <c>--name value</c>, with defaults, and a usage text.</summary>
internal sealed class SampleFlags
{
    private readonly Dictionary<string, (string Value, string Help)> _flags = new(StringComparer.Ordinal);
    private readonly string _program;

    public SampleFlags(string program) => _program = program;

    public SampleFlags Add(string name, string defaultValue, string help)
    {
        _flags[name] = (defaultValue, help);
        return this;
    }

    /// <summary>Reads <paramref name="args"/>; false (usage printed) for <c>--help</c>, an unknown flag or a missing value.</summary>
    public bool Parse(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            if (arg is "-h" or "--help")
            {
                Console.WriteLine(Usage());
                return false;
            }
            if (!arg.StartsWith("--", StringComparison.Ordinal) || !_flags.ContainsKey(arg[2..]) || i + 1 >= args.Length)
            {
                Console.Error.WriteLine($"{_program}: {(i + 1 >= args.Length && arg.StartsWith("--", StringComparison.Ordinal) && _flags.ContainsKey(arg[2..]) ? $"{arg} needs a value" : $"unknown argument '{arg}'")}");
                Console.Error.WriteLine(Usage());
                return false;
            }
            _flags[arg[2..]] = (args[++i], _flags[arg[2..]].Help);
        }
        return true;
    }

    public string String(string name) => _flags[name].Value;

    public int Int(string name) =>
        int.TryParse(String(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) && value >= 0
            ? value
            : throw new ArgumentException($"--{name} {String(name)} is not a whole number >= 0");

    public double Double(string name) =>
        double.TryParse(String(name), NumberStyles.Float, CultureInfo.InvariantCulture, out double value) && double.IsFinite(value)
            ? value
            : throw new ArgumentException($"--{name} {String(name)} is not a number");

    private string Usage() =>
        $"usage: {_program} [flags]\n" + string.Join('\n', _flags.Select(f => $"  --{f.Key,-14} {f.Value.Help} (default: {f.Value.Value})"));
}

/// <summary>What both samples share: the device, the process group, rank-0 printing and the parameter checksum.</summary>
internal sealed class SampleRun : IDisposable
{
    private SampleRun(IProcessGroup group, torch.Device device)
    {
        Group = group;
        Device = device;
    }

    public IProcessGroup Group { get; }

    public torch.Device Device { get; }

    public int Rank => Group.Rank;

    public int WorldSize => Group.WorldSize;

    public bool IsCuda => Device.type == DeviceType.CUDA;

    /// <summary>
    /// Loads libtorch and joins the world: <c>mpi</c> for <c>cpu</c> (a world of one without a launcher), <c>nccl</c>
    /// for <c>cuda</c>, one GPU per rank (<c>cuda:LOCAL_RANK</c>).
    /// </summary>
    public static SampleRun Start(string device)
    {
        LibTorchInfo torchInfo = TorchRuntime.EnsureInitialized(TorchRuntimeOptions.FromEnvironment());
        switch (device)
        {
            case "cpu":
                return new SampleRun(ProcessGroups.Initialize("mpi"), torch.CPU);
            case "cuda":
                if (!torchInfo.CudaAvailable)
                {
                    throw new InvalidOperationException($"--device cuda: the libtorch at {torchInfo.Path} sees no GPU ({torchInfo.CudaProblem ?? "CPU build"}); set KILN_LIBTORCH_DIR to a CUDA PyTorch's torch/lib");
                }
                int localRank = int.TryParse(Environment.GetEnvironmentVariable("LOCAL_RANK"), NumberStyles.None, CultureInfo.InvariantCulture, out int lr) ? lr : 0;
                var cuda = new torch.Device(DeviceType.CUDA, localRank % torchInfo.CudaDevices);
                return new SampleRun(ProcessGroups.Initialize("nccl"), cuda);
            default:
                throw new ArgumentException($"--device is cpu or cuda, not '{device}'");
        }
    }

    /// <summary>Prints a line on rank 0 only.</summary>
    public void Log(string line)
    {
        if (Rank == 0)
        {
            Console.WriteLine(line);
        }
    }

    /// <summary>Waits for the GPU's queued work (no-op on CPU), so that a clock read after it means what it says.</summary>
    public void Synchronize()
    {
        if (IsCuda)
        {
            torch.cuda.synchronize(Device);
        }
    }

    /// <summary>The mean of <paramref name="value"/> over ranks.</summary>
    public double Average(double value)
    {
        using torch.Tensor t = torch.tensor(new[] { value }, device: Device);
        Group.AllReduce(t, ReduceOp.Average);
        return t.item<double>();
    }

    /// <summary>
    /// Prints <c>checksum rank=R fnv1a=HEX sum=S</c>: FNV-1a over every parameter's bytes in registration order, and the
    /// sum of all parameters. Data-parallel replicas must print the same line, bit for bit, on every rank.
    /// </summary>
    public void PrintChecksum(torch.nn.Module model)
    {
        ulong hash = 14695981039346656037UL;
        double sum = 0;
        foreach ((string _, TorchSharp.Modules.Parameter parameter) in model.named_parameters())
        {
            using torch.Tensor cpu = parameter.detach().cpu().contiguous();
            foreach (byte b in cpu.bytes)
            {
                hash = (hash ^ b) * 1099511628211UL;
            }
            using torch.Tensor total = cpu.to(torch.float64).sum();
            sum += total.item<double>();
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"checksum rank={Rank} fnv1a={hash:x16} sum={sum:R}"));
    }

    public void Dispose() => Group.Dispose();
}

/// <summary>Progress lines for long runs: a rate and the time left, at most every few seconds.</summary>
internal sealed class Progress(int total, string unit)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public string Line(int done) =>
        done == 0 || _clock.Elapsed.TotalSeconds <= 0
            ? ""
            : string.Create(CultureInfo.InvariantCulture, $"{done / _clock.Elapsed.TotalSeconds:F2} {unit}/s, {_clock.Elapsed.TotalSeconds:F1} s elapsed, ~{(total - done) * _clock.Elapsed.TotalSeconds / done:F0} s left");
}
