using System.Globalization;
using Kiln.Distributed;
using TorchSharp;
using static TorchSharp.torch;

// Usage (one process per GPU, e.g. `kiln agent --standalone --nproc-per-node 2 -- Kiln.Distributed.Benchmarks MODE…`):
//   collectives            every collective, float/int dtypes, awkward sizes, against a reference computed locally
//   busbw [MB…]            all_reduce bus bandwidth (float32), default 256 MB
//   ddp                    DDP (SGD and AdamW, 20 steps) against a single-process run of the same global batch
//   lm [--flag value…]     steps/s of the tiny-lm sample's model trained with DDP (a world of 1 trains alone), as torch_tiny_gpt.py
//   deadrank               the last rank exits at once; the others enter an all_reduce and must be ended by the watchdog
// KILN_BENCH_TIMEOUT_S sets the group's collective timeout (default: ProcessGroupOptions' 10 minutes).
// Prints one line per check; exit 0 when everything matched.
string mode = args.Length > 0 ? args[0] : "collectives";
// KILN_BENCH_BACKEND=mpi runs the same code on CPU tensors (a smoke test off the GPU host).
string backend = Environment.GetEnvironmentVariable("KILN_BENCH_BACKEND") ?? "nccl";
string? timeout = Environment.GetEnvironmentVariable("KILN_BENCH_TIMEOUT_S");
var options = timeout is null
    ? ProcessGroupOptions.Default
    : new ProcessGroupOptions { Timeout = TimeSpan.FromSeconds(double.Parse(timeout, CultureInfo.InvariantCulture)) };
using IProcessGroup group = ProcessGroups.Initialize(backend, options);
Device device = backend == "nccl"
    ? new Device(DeviceType.CUDA, int.Parse(Environment.GetEnvironmentVariable("LOCAL_RANK") ?? "0", CultureInfo.InvariantCulture))
    : CPU;
int failures = mode switch
{
    "collectives" => Kiln.Distributed.Benchmarks.Collectives.Run(group, device),
    "busbw" => Kiln.Distributed.Benchmarks.BusBandwidth.Run(group, device, [.. args.Skip(1).Select(a => int.Parse(a, CultureInfo.InvariantCulture))]),
    "ddp" => Kiln.Distributed.Benchmarks.DdpEquivalence.Run(group, device),
    "lm" => Kiln.Distributed.Benchmarks.LanguageModel.Run(group, device, args[1..]),
    "deadrank" => DeadRank(group, device),
    _ => throw new ArgumentException($"unknown mode {mode}"),
};
return failures == 0 ? 0 : 1;

static int DeadRank(IProcessGroup group, Device device)
{
    if (group.Rank == group.WorldSize - 1)
    {
        Console.WriteLine($"rank {group.Rank} exits without joining the all_reduce");
        Environment.Exit(3);
    }
    using Tensor t = ones(1000, device: device);
    Console.WriteLine($"rank {group.Rank} enters all_reduce at {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
    group.AllReduce(t);
    float sum = t.cpu().sum().item<float>(); // the host waits here for a collective that can never complete
    Console.WriteLine($"FAIL rank {group.Rank}: the all_reduce returned ({sum}) although rank {group.WorldSize - 1} had exited");
    return 1;
}
