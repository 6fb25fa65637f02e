#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed with device-pack.sh src/Kiln.Cli benchmarks/Kiln.Distributed.Benchmarks):
# DDP over NCCL (2 ranks through kiln agent) against a single-process run of the same global batch, SGD and AdamW.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
"$root/.device/run.sh" kiln agent --standalone --nproc-per-node 2 --log-dir "$out/ddp" -- /tmp/kiln-app/Kiln.Distributed.Benchmarks ddp > "$out/ddp.txt" 2>&1
status=$?
echo "ddp equivalence exit $status"; cat "$out"/ddp/attempt_0/*/stdout.log
exit $status
