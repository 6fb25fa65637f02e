#!/usr/bin/env bash
# On the GPU host (its Python onnxruntime, CPU): Kiln's int8 all-MiniLM-L6-v2 against quantize_dynamic's.
# The models are larger than what one device call may carry (64 MiB), so they travel in parts over two calls on the
# same warm machine: here, `Kiln.Optimize.Benchmarks --export DIR`, then split DIR's files into .device/minilm-a and
# .device/minilm-b (split -b; names NAME.partNN); there, `gpu-minilm.sh stash .device/minilm-a` in the first call and
# `gpu-minilm.sh run .device/minilm-b` in the second (it stashes, joins the parts and runs ort_minilm_compare.py;
# VARIANTS=1 adds the one-difference variants at one thread).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
store=/tmp/kiln-minilm
mkdir -p "$store"
cp "$2"/* "$store"/
ls -la "$store" | tail -n +2
[ "$1" = run ] || exit 0
cd "$store"
for name in minilm.onnx minilm-kiln-int8.onnx tokens.json $(ls | sed -n 's/^\(minilm-kiln-int8-.*\.onnx\)\.part.*/\1/p' | sort -u); do
  if ls "$name".part* >/dev/null 2>&1; then cat "$name".part* > "$name"; fi
  [ -s "$name" ] || { echo "missing $name" >&2; exit 2; }
done
sha256sum minilm.onnx minilm-kiln-int8.onnx
python3 -c 'import onnxruntime, onnx; print("onnxruntime", onnxruntime.__version__, "onnx", onnx.__version__)'
lscpu | grep "Model name"
python3 "$here/ort_minilm_compare.py" "$store" --threads 1 --rounds 3 --ops ${VARIANTS:+--variants}
python3 "$here/ort_minilm_compare.py" "$store" --threads 4 --rounds 3
python3 "$here/ort_minilm_compare.py" "$store" --threads 0 --rounds 3  # 0: ONNX Runtime's default, one per physical core
