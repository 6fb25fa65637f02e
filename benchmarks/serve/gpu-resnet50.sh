#!/usr/bin/env bash
# Kiln.Serve with a TorchScript ResNet-50 on a GPU host, against plain PyTorch on the same card, in one run.
#   bash benchmarks/serve/gpu-resnet50.sh [BENCH_COMMAND]
# BENCH_COMMAND (or env KILN_SERVE_BENCH) runs the packed benchmark; default ".device/run.sh Kiln.Serve.Benchmarks", made here by
#   ../shared/scripts/device-pack.sh benchmarks/Kiln.Serve.Benchmarks        (carry .device to the host)
# Environment (defaults in brackets):
#   OUT           results folder [$OUT of the device tool, else /tmp/kiln-serve-gpu]
#   PYTHON        python with CUDA torch + torchvision [python3]
#   SECONDS_EACH  seconds per measurement [5]
#   WORKERS       server workers = in-process ceiling threads = PyTorch threads [2]
#   BATCH_SIZES   server batch_size values, PyTorch batch sizes [1,8]
#   CONCURRENCY   closed-loop client counts [1,2,4,8,16,32,64]
#   DELAY_MS      server max_batch_delay [5]
# Steps: (1) PyTorch makes resnet50.pt (random weights, torch.jit.trace) and times its own loop on the card at each batch size,
# 1 and WORKERS threads; (2) Kiln.Serve.Benchmarks --model torchscript serves that .pt (handler tensor, .npy bodies) and
# measures TorchSharp's torch.jit.load of the same file on the same card as its in-process ceiling. Results: $OUT/*.txt, *.json.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-/tmp/kiln-serve-gpu}"; mkdir -p "$out"
python="${PYTHON:-python3}"
seconds="${SECONDS_EACH:-5}"
workers="${WORKERS:-2}"
batches="${BATCH_SIZES:-1,8}"
concurrency="${CONCURRENCY:-1,2,4,8,16,32,64}"
delay="${DELAY_MS:-5}"
bench="${1:-${KILN_SERVE_BENCH:-.device/run.sh Kiln.Serve.Benchmarks}}"
export NCCL_NVLS_ENABLE=0
pt="$out/resnet50.pt"

{
  echo "# host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
} | tee "$out/host.txt"

threads=1; [[ "$workers" != 1 ]] && threads="1,$workers"
echo "## PyTorch: TorchScript ResNet-50, batch sizes $batches, threads $threads" | tee "$out/pytorch.txt"
"$python" "$here/resnet50_torchscript.py" --out "$pt" --batch-sizes "$batches" --threads "$threads" --seconds "$seconds" \
  --json "$out/pytorch.json" 2>&1 | tee -a "$out/pytorch.txt"
py_rc=${PIPESTATUS[0]}
[[ -f "$pt" ]] || { echo "no $pt: PyTorch failed (exit $py_rc)" >&2; exit 1; }

echo "## Kiln.Serve.Benchmarks --model torchscript ($bench)" | tee "$out/kiln.txt"
# shellcheck disable=SC2086  # BENCH_COMMAND is a command line
$bench --model torchscript --pt "$pt" --device cuda --workers "$workers" --batch-size "$batches" --max-batch-delay-ms "$delay" \
  --concurrency "$concurrency" --seconds "$seconds" --warmup 1 --json "$out/kiln.json" 2>&1 | tee -a "$out/kiln.txt"
kiln_rc=${PIPESTATUS[0]}
rm -f "$pt"   # about 100 MB; the script makes it again in seconds

echo
echo "# summary (same card): PyTorch loop vs Kiln in-process ceiling (TorchSharp) vs Kiln.Serve over HTTP"
grep '^pytorch ' "$out/pytorch.txt"
grep -E '^(## |ceiling|\| |# server overhead|server:)' "$out/kiln.txt"
echo "exit: python $py_rc, kiln $kiln_rc"
[[ $py_rc -eq 0 && $kiln_rc -eq 0 ]]
