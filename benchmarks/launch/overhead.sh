#!/usr/bin/env bash
# The local launcher's overhead for a one-replica echo app over the bare process:
#
#   benchmarks/launch/overhead.sh [TRIALS]
#
# Per trial, in turn: /bin/echo run directly; `kiln run --wait utils.echo` (the default, a detached supervisor process);
# `kiln run --wait -cfg supervise=inline utils.echo` (the submitting kiln supervises). Each is timed wall-clock from
# fork to exit with date +%s%N. Prints the median of each, and the medians of the differences to the bare process.
# Also times `kiln --version` (the .NET start of one kiln process, the floor under every kiln verb).
# Needs a built kiln (dotnet build -c Release); KILN=path/to/kiln overrides the default apphost.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRIALS=${1:-21}
KILN=${KILN:-src/Kiln.Cli/bin/Release/net10.0/kiln}
[ -x "$KILN" ] || { echo "no $KILN: run dotnet build -c Release first" >&2; exit 2; }
STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT
export KILN_STATE_DIR=$STATE KILNCONFIG=/dev/null

ms() { local s=$(date +%s%N); "$@" >/dev/null 2>&1; local rc=$?; local e=$(date +%s%N); [ $rc = 0 ] || { echo "failed ($rc): $*" >&2; exit 1; }; echo $(( (e - s) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }

"$KILN" run --wait utils.echo --msg warm-up >/dev/null 2>&1  # first-run costs (disk cache) out of the way
: > "$STATE/bare"; : > "$STATE/detached"; : > "$STATE/inline"; : > "$STATE/version"; : > "$STATE/d_detached"; : > "$STATE/d_inline"
for _ in $(seq "$TRIALS"); do
  b=$(ms /bin/echo hello)
  d=$(ms "$KILN" run --wait utils.echo --msg hello)
  i=$(ms "$KILN" run --wait -cfg supervise=inline utils.echo --msg hello)
  v=$(ms "$KILN" --version)
  echo "$b" >> "$STATE/bare"; echo "$d" >> "$STATE/detached"; echo "$i" >> "$STATE/inline"; echo "$v" >> "$STATE/version"
  echo $((d - b)) >> "$STATE/d_detached"; echo $((i - b)) >> "$STATE/d_inline"
done
echo "trials: $TRIALS on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bare /bin/echo:                       median $(median < "$STATE/bare") ms"
echo "kiln --version (one .NET start):      median $(median < "$STATE/version") ms"
echo "kiln run --wait (detached supervisor): median $(median < "$STATE/detached") ms, overhead $(median < "$STATE/d_detached") ms"
echo "kiln run --wait (supervise=inline):    median $(median < "$STATE/inline") ms, overhead $(median < "$STATE/d_inline") ms"
