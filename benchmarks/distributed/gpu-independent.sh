#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed as for gpu-lm.sh): the tiny-lm model's 1-GPU run started twice at
# once, one process per GPU and no communication between them. What these lose against a lone 1-GPU run is what two
# processes on one host cost by themselves (CPU, clocks, PCIe), before any all-reduce: the ceiling for DDP's scaling.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
for config in "${@:-small}"; do
  case $config in
    small) flags="--layers 6 --d-model 512 --heads 8 --seq 256 --batch 32 --steps 200 --warmup 20" ;;
    medium) flags="--layers 12 --d-model 768 --heads 12 --seq 512 --batch 16 --steps 60 --warmup 10" ;;
  esac
  for gpu in 0 1; do
    CUDA_VISIBLE_DEVICES=$gpu "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer fused 2>/dev/null | sed "s/^{/{\"concurrent_gpu\":$gpu,/" &
  done
  wait
  for gpu in 0 1; do
    CUDA_VISIBLE_DEVICES=$gpu python3 "$here/torch_tiny_gpt.py" $flags 2>/dev/null | sed "s/^{/{\"concurrent_gpu\": $gpu, /" &
  done
  wait
done
