#!/usr/bin/env python3
"""PyTorch's side of the Kiln.Serve TorchScript benchmark (benchmarks/serve/gpu-resnet50.sh).

1. Makes a TorchScript ResNet-50 with random weights (torchvision, traced on the CPU with a [1,3,224,224] input, works
   for any batch size) and saves it with torch.jit.save.
2. Loads it back with torch.jit.load on the device and runs the plain inference loop at each batch size and thread count:
   - "copy": a float32 numpy batch on the host -> tensor -> device -> forward -> output back on the host, what a server
     (and Kiln's in-process ceiling) has to do for each request;
   - "resident": input already on the device, output left there, torch.cuda.synchronize() after each call (the GPU alone).
   Each thread calls the shared module back to back (closed loop); 1 s of warm-up, then every call ending within the
   measurement window is recorded. Prints one line per result: images/s and per-call p50/p99 in ms.

usage: python3 resnet50_torchscript.py --out resnet50.pt [--batch-sizes 1,8] [--threads 1,2] [--seconds 5]
                                        [--device cuda] [--json results.json] [--save-only]
"""
import argparse
import json
import threading
import time

import numpy as np
import torch
import torchvision


def make_model(path):
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.randn(1, 3, 224, 224))
        # A traced graph that only worked for the example's batch size would fail here.
        check = traced(torch.randn(2, 3, 224, 224))
        assert tuple(check.shape) == (2, 1000), check.shape
    torch.jit.save(traced, path)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = max(1, int(np.ceil(p * len(sorted_values))))
    return sorted_values[rank - 1]


def measure(module, device, batch, threads, seconds, warmup, resident, max_calls=1_000_000):
    host = np.random.default_rng(7).uniform(-1, 1, size=(batch, 3, 224, 224)).astype(np.float32)
    gpu_input = torch.from_numpy(host).to(device) if resident else None
    latencies = [[] for _ in range(threads)]
    errors = []
    started = [0]
    lock = threading.Lock()
    go = threading.Event()
    window = {}

    def call():
        with torch.inference_mode():
            if resident:
                out = module(gpu_input)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return out
            x = torch.from_numpy(host).to(device)
            return module(x).cpu().numpy()

    def worker(index):
        try:
            call()  # first call (allocations, cuDNN/kernel selection) is not counted
            go.wait()
            start_at, end_at = window["start"], window["end"]
            mine = latencies[index]
            while True:
                t0 = time.perf_counter()
                with lock:
                    started[0] += 1
                    over = started[0] > max_calls
                if t0 >= end_at or over:
                    return
                call()
                t1 = time.perf_counter()
                if start_at <= t1 <= end_at:
                    mine.append(t1 - t0)
        except Exception as ex:  # reported after the join
            errors.append(ex)

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    # Give every thread time for its first call before the window opens.
    time.sleep(0.2)
    now = time.perf_counter()
    window["start"] = now + warmup
    window["end"] = now + warmup + seconds
    go.set()
    for w in workers:
        w.join(timeout=warmup + seconds + 120)
    if errors:
        raise errors[0]
    every = sorted(v for per in latencies for v in per)
    return {
        "batch": batch,
        "threads": threads,
        "mode": "resident" if resident else "copy",
        "calls": len(every),
        "images_per_second": len(every) * batch / seconds,
        "p50_ms": percentile(every, 0.50) * 1e3,
        "p99_ms": percentile(every, 0.99) * 1e3,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to save the TorchScript file")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts calling the shared module")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--save-only", action="store_true", help="only make the .pt")
    args = parser.parse_args()

    make_model(args.out)
    print(f"# saved TorchScript ResNet-50 (random weights) to {args.out}")
    if args.save_only:
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# torch {torch.__version__}, torchvision {torchvision.__version__}, device {device} ({name}), "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark}")
    module = torch.jit.load(args.out, map_location=device).eval()
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for threads in [int(t) for t in args.threads.split(",")]:
            for resident in (False, True):
                r = measure(module, device, batch, threads, args.seconds, args.warmup, resident)
                results.append(r)
                print(f"pytorch batch={r['batch']} threads={r['threads']} mode={r['mode']} "
                      f"images/s={r['images_per_second']:.1f} p50_ms={r['p50_ms']:.3f} p99_ms={r['p99_ms']:.3f} calls={r['calls']}",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "device_name": name, "torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
