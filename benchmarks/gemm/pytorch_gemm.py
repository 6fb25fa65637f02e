"""PyTorch reference for `kiln doctor --gemm`: the same square GEMM, timed the same way.

Usage: python3 pytorch_gemm.py SECONDS SIZE
Prints one line per device in kiln's format: "<device> <dtype> NxN: X GFLOP/s (K multiplies in T s)".
CPU uses float32, CUDA bfloat16; one untimed warm-up multiply, then multiply-and-synchronize until
SECONDS have passed.
"""
import sys
import time

import torch


def measure(device: str, dtype: torch.dtype, size: int, seconds: float) -> str:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    start = time.perf_counter()
    n = 0
    while True:
        a @ b
        sync()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    flops = n * 2.0 * size ** 3 / elapsed
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    return f"{device} {name} {size}x{size}: {flops / 1e9:.1f} GFLOP/s ({n} multiplies in {elapsed:.2f} s)"


def main() -> None:
    seconds = float(sys.argv[1])
    gpu_size = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
    print(f"pytorch {torch.__version__}")
    print(measure("cpu", torch.float32, 1024, seconds))
    for i in range(torch.cuda.device_count()):
        print(measure(f"cuda:{i}", torch.bfloat16, gpu_size, seconds))


if __name__ == "__main__":
    main()
