#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed as for gpu-lm.sh): the scaling figures with the run-to-run noise
# of a shared host in view. ROUNDS rounds, each running back to back: Kiln on 1 GPU, Kiln DDP on 2 GPUs (overlap off,
# then on), PyTorch on 1 GPU and PyTorch DDP on 2 GPUs — all with fused/foreach AdamW; compare medians across rounds.
#   usage: gpu-scaling.sh ROUNDS CONFIG...      (CONFIG: small | medium, as in gpu-lm.sh but longer runs)
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
bench=/tmp/kiln-app/Kiln.Distributed.Benchmarks
rounds=$1; shift
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
for config in "$@"; do
  case $config in
    small) flags="--layers 6 --d-model 512 --heads 8 --seq 256 --batch 32 --steps 600 --warmup 30" ;;
    medium) flags="--layers 12 --d-model 768 --heads 12 --seq 512 --batch 16 --steps 200 --warmup 15" ;;
  esac
  for round in $(seq "$rounds"); do
    tag="\"round\":$round,\"config\":\"$config\","
    "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer fused 2>/dev/null | sed "s/^{/{$tag/"
    for overlap in false true; do
      rm -rf /tmp/kiln-scaling
      "$run" kiln agent --standalone --nproc-per-node 2 --log-dir /tmp/kiln-scaling -- "$bench" lm $flags --optimizer fused --overlap $overlap >/dev/null 2>&1
      sed "s/^{/{$tag/" /tmp/kiln-scaling/attempt_0/0/stdout.log
    done
    python3 "$here/torch_tiny_gpt.py" $flags 2>/dev/null | sed "s/^{/{$tag/"
    torchrun --standalone --nproc-per-node 2 "$here/torch_tiny_gpt.py" $flags 2>/dev/null | sed "s/^{/{$tag/"
  done
done
