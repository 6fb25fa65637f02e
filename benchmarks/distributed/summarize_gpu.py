"""Ratios from gpu-all.sh's results.jsonl: collectives and DDP checks, bus bandwidth against torch.distributed,
and per tiny-lm config the scaling (2 GPUs ÷ 1 GPU, steps/s at the same per-GPU batch) and Kiln ÷ PyTorch."""
import json
import os
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
with open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[1])), "gpus.txt")) as gpus:
    card = gpus.readline().split(",")[0].strip()
print(f"card: 2 x {card}")
for row in rows:
    if row.get("check") in ("collectives", "ddp"):
        print(f"{row['check']}: exit {row['exit']}, {row['ok']} OK, {row['fail']} FAIL")
    if row.get("check") == "deadrank":
        verdict = "OK" if row["exit"] == 124 else "FAIL"
        print(f"dead rank: {verdict}, rank 0 exit {row['exit']} {row['seconds_after_entering']} s after entering the all_reduce "
              f"(timeout {row['timeout_s']} s): {row['message']}")
bus = {impl: [r["busbw_gbs"] for r in rows if r.get("check") == "busbw" and r["impl"] == impl and r["mb"] == 256]
       for impl in ("kiln", "torch")}
if bus["kiln"] and bus["torch"]:
    k, t = statistics.mean(bus["kiln"]), statistics.mean(bus["torch"])
    print(f"all_reduce 256 MB bus bandwidth: Kiln {k:.1f} GB/s, torch.distributed {t:.1f} GB/s, ratio {k / t:.3f} (target >= 0.90)")
for config in dict.fromkeys(r["config"] for r in rows if r.get("check") == "lm"):
    lm = [r for r in rows if r.get("check") == "lm" and r["config"] == config]

    def speed(impl, world, overlap=None):
        found = [r["steps_per_s"] for r in lm if r["impl"] == impl and r["world"] == world
                 and (overlap is None or r.get("overlap") == overlap)]
        return found[0] if found else float("nan")

    k1, kon, koff = speed("kiln", 1), speed("kiln", 2, True), speed("kiln", 2, False)
    t1, t2 = speed("torch", 1), speed("torch", 2)
    print(f"lm {config}: steps/s Kiln 1 GPU {k1:.2f}, 2 GPUs overlap on {kon:.2f} / off {koff:.2f}; PyTorch {t1:.2f} -> {t2:.2f}")
    print(f"  scaling 2/1: Kiln {kon / k1:.3f} (on) / {koff / k1:.3f} (off), PyTorch {t2 / t1:.3f} (target >= 0.90)")
    print(f"  Kiln / PyTorch at 2 GPUs: {kon / t2:.3f} (on) / {koff / t2:.3f} (off) (target >= 0.95); at 1 GPU {k1 / t1:.3f}")
