#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed with device-pack.sh src/Kiln.Cli benchmarks/Kiln.Distributed.Benchmarks):
# NCCL collectives and DDP equivalence through kiln agent, then all_reduce bus bandwidth of Kiln and torch.distributed.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
"$run" kiln --version >/dev/null 2>&1 || true
bench=/tmp/kiln-app/Kiln.Distributed.Benchmarks
"$run" kiln agent --standalone --nproc-per-node 2 --log-dir "$out/collectives" -- "$bench" collectives > "$out/collectives.txt" 2>&1
echo "collectives exit $? ok=$(cat "$out"/collectives/attempt_0/*/stdout.log | grep -c '^OK') fail=$(cat "$out"/collectives/attempt_0/*/stdout.log | grep -c '^FAIL')"
"$run" kiln agent --standalone --nproc-per-node 2 --log-dir "$out/ddp" -- "$bench" ddp > "$out/ddp.txt" 2>&1
echo "ddp exit $?"; cat "$out"/ddp/attempt_0/*/stdout.log
for i in 1 2; do
  "$run" kiln agent --standalone --nproc-per-node 2 --log-dir "$out/busbw$i" -- "$bench" busbw 16 64 256 1024 > "$out/busbw$i.txt" 2>&1
  cat "$out"/busbw$i/attempt_0/0/stdout.log
  torchrun --standalone --nproc-per-node 2 "$here/torch_allreduce.py" 16 64 256 1024 2> "$out/torch_busbw$i.err"
done
