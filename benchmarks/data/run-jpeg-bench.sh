#!/usr/bin/env bash
# The JPEG pipeline benchmark, side by side in one run: Kiln.Data's single-core ceiling, then for each core
# count N, PyTorch's DataLoader (PIL + torchvision) and Kiln.Data's pipeline, each pinned to the same N cores.
#   bash benchmarks/data/run-jpeg-bench.sh [CORES...]            (default: 1 and all cores)
# Environment:
#   CORPUS   shard folder (default /tmp/kiln-jpeg-corpus; made with make-corpus.sh when missing)
#   SECONDS_EACH  seconds each measurement runs (default 15)
#   PYTHON   interpreter with torch, torchvision, Pillow (default /usr/bin/python3)
#   KILN_BENCH  command running Kiln.Data.Benchmarks (default: the Release build under benchmarks/)
# Prints every result line, then a summary table.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
corpus="${CORPUS:-/tmp/kiln-jpeg-corpus}"
seconds="${SECONDS_EACH:-15}"
python="${PYTHON:-/usr/bin/python3}"
bench="${KILN_BENCH:-dotnet $root/benchmarks/Kiln.Data.Benchmarks/bin/Release/net10.0/Kiln.Data.Benchmarks.dll}"
all=$(nproc)
cores=("$@")
((${#cores[@]})) || cores=(1 "$all")

[[ -d "$corpus" ]] || bash "$here/make-corpus.sh" "$corpus"

pin() { local n=$1; shift; taskset -c "0-$((n - 1))" "$@"; }
rate() { sed -n 's/.*[ :]\([0-9.]*\) images\/s[,; ].*/\1/p' | head -1; }

echo "# host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); corpus $corpus"
# Each command's output is printed, then its result line picked out.
run() { local out; out=$("$@"); echo "$out" >&2; echo "$out"; }
ceiling_line=$(run pin 1 $bench ceiling --corpus "$corpus" --seconds "$seconds" | grep '^ceiling')
ceiling=$(rate <<<"$ceiling_line")
summary=()
for n in "${cores[@]}"; do
  py_line=$(run pin "$n" "$python" "$here/pytorch_loader.py" "$corpus" --workers "$n" --seconds "$seconds" | grep '^pytorch')
  py=$(sed -n 's/.*images\/s=\([0-9.]*\).*/\1/p' <<<"$py_line")
  kiln_line=$(run pin "$n" $bench pipeline --corpus "$corpus" --threads "$n" --seconds "$seconds" --ceiling "$ceiling" --pytorch "$py" | grep '^pipeline')
  kiln=$(rate <<<"$kiln_line")
  summary+=("$(awk -v n="$n" -v k="$kiln" -v p="$py" -v c="$ceiling" 'BEGIN { printf "| %d | %.0f | %.0f | %.0f | %.0f | %.2fx | %.0f%% |", n, k, k / n, p, p / n, k / p, 100 * k / n / c }')")
done
echo
echo "| cores | Kiln img/s | Kiln img/s/core | PyTorch img/s | PyTorch img/s/core | Kiln / PyTorch | Kiln per core / 1-core ceiling ($(printf %.0f "$ceiling") img/s) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
