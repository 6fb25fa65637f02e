#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed as for gpu-lm.sh): the scaling figures with the run-to-run noise
# of a shared host in view. ROUNDS rounds; in each, per CONFIG, back to back: Kiln on 1 GPU alone; the same 1-GPU run
# started on both GPUs at once with no communication (what two processes on this host cost by themselves); Kiln DDP on 2 GPUs (overlap off, then on); PyTorch
# on 1 GPU and PyTorch DDP on 2 GPUs. All use fused/foreach AdamW. Compare medians across rounds.
#   usage: gpu-scaling.sh ROUNDS CONFIG...
#   CONFIG: small, medium or large (lm-configs.sh)
# JSON lines on stdout and in $OUT/results.jsonl; GPU power, SM use and clocks every second in $OUT/dmon.txt, with
# the start of each run in $OUT/timeline.txt.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
. "$here/lm-configs.sh"
out=${OUT:-/tmp}
bench=/tmp/kiln-app/Kiln.Distributed.Benchmarks
rounds=$1; shift
nvidia-smi --query-gpu=name,memory.total,driver_version,pci.bus_id --format=csv,noheader | tee "$out/gpus.txt"
nvidia-smi topo -m > "$out/topo.txt" 2>&1
lscpu > "$out/lscpu.txt" 2>&1
nvidia-smi dmon -s puc -o T > "$out/dmon.txt" 2>&1 &
dmon=$!
mark() { echo "$(date +%T) $*" >> "$out/timeline.txt"; }
tagged() { sed "s/^{/{$1/"; }
for round in $(seq "$rounds"); do
  for config in "$@"; do
    flags=$(lm_flags "$config") || exit 2
    tag="\"round\":$round,\"config\":\"$config\","
    {
      mark "$config kiln 1 gpu"
      "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer fused 2>/dev/null | tagged "$tag"
      mark "$config kiln independent pair"
      for gpu in 0 1; do
        CUDA_VISIBLE_DEVICES=$gpu "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer fused 2>/dev/null \
          | tagged "$tag\"independent_gpu\":$gpu," &
      done
      wait
      for overlap in false true; do
        mark "$config kiln ddp overlap=$overlap"
        rm -rf /tmp/kiln-scaling
        "$run" kiln agent --standalone --nproc-per-node 2 --log-dir /tmp/kiln-scaling -- "$bench" lm $flags --optimizer fused --overlap $overlap >/dev/null 2>&1
        tagged "$tag" < /tmp/kiln-scaling/attempt_0/0/stdout.log
      done
      mark "$config torch 1 gpu"
      python3 "$here/torch_tiny_gpt.py" $flags 2>/dev/null | tagged "$tag"
      mark "$config torch ddp"
      torchrun --standalone --nproc-per-node 2 "$here/torch_tiny_gpt.py" $flags 2>/dev/null | tagged "$tag"
    } | tee -a "$out/results.jsonl"
  done
done
mark end
kill "$dmon" 2>/dev/null
