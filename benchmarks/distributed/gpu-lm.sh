#!/usr/bin/env bash
# One command on a 2-GPU host (carry .device, packed with device-pack.sh src/Kiln.Cli benchmarks/Kiln.Distributed.Benchmarks):
# steps/s of the tiny-lm sample's model on 1 and 2 GPUs: Kiln (TorchSharp's AdamW or Kiln's FusedAdamW; DDP with and without overlap) and
# PyTorch DDP (AdamW foreach by default, and one parameter at a time as TorchSharp's AdamW). JSON lines on stdout and in $OUT/results.jsonl.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
out=${OUT:-/tmp}
bench=/tmp/kiln-app/Kiln.Distributed.Benchmarks
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
for config in "${@:-small}"; do
  case $config in
    small) flags="--layers 6 --d-model 512 --heads 8 --seq 256 --batch 32 --steps 200 --warmup 20" ;;
    medium) flags="--layers 12 --d-model 768 --heads 12 --seq 512 --batch 16 --steps 60 --warmup 10" ;;
  esac
  {
    for optimizer in torch fused; do
      "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer $optimizer 2> "$out/kiln1-$config-$optimizer.err"
      for overlap in false true; do
        name="$config-$optimizer-$overlap"
        "$run" kiln agent --standalone --nproc-per-node 2 --log-dir "/tmp/kiln2-$name" -- "$bench" lm $flags --optimizer $optimizer --overlap $overlap > "$out/kiln2-$name.agent" 2>&1
        cat "/tmp/kiln2-$name/attempt_0/0/stdout.log"
        head -c 3000 "/tmp/kiln2-$name/attempt_0/0/stderr.log" > "$out/kiln2-$name.err"
      done
    done
    for foreach in default false; do
      python3 "$here/torch_tiny_gpt.py" $flags --foreach $foreach 2> "$out/torch1-$config-$foreach.err"
      torchrun --standalone --nproc-per-node 2 "$here/torch_tiny_gpt.py" $flags --foreach $foreach 2> "$out/torch2-$config-$foreach.err"
    done
  } | tee -a "$out/results.jsonl"
done
