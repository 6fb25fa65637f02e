using System.Globalization;
using Kiln.Distributed;
using TorchSharp;
using static TorchSharp.torch;

// Usage (one process per GPU, e.g. `kiln agent --standalone --nproc-per-node 2 -- Kiln.Distributed.Benchmarks MODE…`):
//   collectives            every collective, float/int dtypes, awkward sizes, against a reference computed locally
//   busbw [MB…]            all_reduce bus bandwidth (float32), default 256 MB
//   ddp                    DDP (SGD and AdamW, 20 steps) against a single-process run of the same global batch
// Prints one line per check; exit 0 when everything matched.
string mode = args.Length > 0 ? args[0] : "collectives";
using IProcessGroup group = ProcessGroups.Initialize("nccl");
var device = new Device(DeviceType.CUDA, int.Parse(Environment.GetEnvironmentVariable("LOCAL_RANK") ?? "0", CultureInfo.InvariantCulture));
int failures = mode switch
{
    "collectives" => Kiln.Distributed.Benchmarks.Collectives.Run(group, device),
    "busbw" => Kiln.Distributed.Benchmarks.BusBandwidth.Run(group, device, [.. args.Skip(1).Select(a => int.Parse(a, CultureInfo.InvariantCulture))]),
    "ddp" => Kiln.Distributed.Benchmarks.DdpEquivalence.Run(group, device),
    _ => throw new ArgumentException($"unknown mode {mode}"),
};
return failures == 0 ? 0 : 1;
