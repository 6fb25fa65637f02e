#!/usr/bin/env bash
# On a GPU host (packed with ../shared/scripts/device-pack.sh src/Kiln.Cli, carry .device):
# kiln doctor with its GEMM check, then PyTorch's same GEMM on the same card, results under $OUT.
set -uo pipefail
out=${OUT:-/tmp/kiln-gemm}; mkdir -p "$out"
seconds=${1:-5}
here=$(cd "$(dirname "$0")" && pwd)
nvidia-smi -L > "$out/gpus.txt" 2>&1
.device/run.sh kiln --version > "$out/doctor.txt" 2>&1
.device/run.sh kiln doctor --gemm "$seconds" >> "$out/doctor.txt" 2>&1; echo "exit: $?" >> "$out/doctor.txt"
python3 "$here/pytorch_gemm.py" "$seconds" > "$out/pytorch.txt" 2>&1
cat "$out/gpus.txt" "$out/doctor.txt" "$out/pytorch.txt"
