"""torch.distributed all_reduce bus bandwidth, timed the same way as Kiln.Distributed.Benchmarks' busbw mode.

Run one process per GPU: torchrun --standalone --nproc-per-node 2 torch_allreduce.py [MB ...]
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist


def main() -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    world = dist.get_world_size()
    for mb in [int(a) for a in sys.argv[1:]] or [256]:
        nbytes = mb * 1024 * 1024
        t = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
        iterations = 20 if mb >= 64 else 100
        for _ in range(5):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iterations):
            dist.all_reduce(t)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iterations
        algbw = nbytes / seconds / 1e9
        if dist.get_rank() == 0:
            print(json.dumps({"impl": "torch", "op": "all_reduce", "mb": mb, "world": world, "time_us": round(seconds * 1e6, 1),
                              "algbw_gbs": round(algbw, 2), "busbw_gbs": round(algbw * 2 * (world - 1) / world, 2)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
