#!/usr/bin/env bash
# One command on a 2-GPU host: both samples on 2 GPUs through `kiln run -s local dist.ddp -j 1x2`, as their READMEs say.
# Pack first: ../shared/scripts/device-pack.sh src/Kiln.Cli samples/distributed/digits-cnn samples/distributed/tiny-lm
# and copy digits.csv.gz (eng/test.sh caches it under artifacts/cache/) to .device/; carry .device.
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
app=/tmp/kiln-app
nvidia-smi --query-gpu=name --format=csv,noheader
"$run" kiln run -s local --wait --log dist.ddp -j 1x2 --entrypoint "$app/Kiln.Samples.DigitsCnn" -- \
  --device cuda --data "$root/.device/digits.csv.gz"
echo "digits-cnn exit $?"
"$run" kiln run -s local --wait --log dist.ddp -j 1x2 --entrypoint "$app/Kiln.Samples.TinyLm" -- \
  --device cuda --dtype bfloat16 --layers 6 --d-model 512 --heads 8 --seq 256 --batch 32 --steps 300 --warmup-steps 50 --optimizer fused --log-every 100
echo "tiny-lm exit $?"
