#!/usr/bin/env bash
# Everything issue 6 asks of a 2-GPU host, in one command (carry .device, packed with
# device-pack.sh src/Kiln.Cli benchmarks/Kiln.Distributed.Benchmarks):
#   1. every collective over NCCL (2 ranks through kiln agent) against a reference computed on each rank;
#   2. DDP over NCCL against a single-process run of the same global batch (20 SGD and 20 AdamW steps);
#   3. all_reduce bus bandwidth at 256 MB, Kiln and torch.distributed alternately, twice each;
#   4. the tiny-lm sample's model: Kiln on 1 GPU, Kiln DDP on 2 (overlap on, the default, and off), PyTorch on 1 and
#      PyTorch DDP on 2, same architecture, batch, dtype (bf16) and optimizer (fused/foreach AdamW), for the configs
#      given (default: large medium small; large keeps the GPU busy, small is bound by kernel launches).
# JSON lines in $OUT/results.jsonl, then a summary of the ratios (summarize_gpu.py).
#   usage: gpu-all.sh [CONFIG...]      (CONFIG: large | medium | small; none runs the checks and bandwidth only)
set -uo pipefail
export NCCL_NVLS_ENABLE=0
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
run="$root/.device/run.sh"
. "$here/lm-configs.sh"
out=${OUT:-/tmp}
logs=/tmp/kiln-gpu-all  # agent logs stay on the host; $OUT gets the results, the summary and the check outputs
rm -rf "$logs"; mkdir -p "$logs"
results="$out/results.jsonl"
: > "$results"
bench=/tmp/kiln-app/Kiln.Distributed.Benchmarks
agent() { "$run" kiln agent --standalone --nproc-per-node 2 --log-dir "$logs/$1" -- "$bench" "${@:2}" > "$logs/$1.agent" 2>&1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
nvidia-smi topo -m > "$out/topo.txt" 2>&1

for check in collectives ddp; do
  agent "$check" "$check"
  status=$?
  cat "$logs/$check"/attempt_0/*/stdout.log > "$out/$check.txt"
  echo "{\"check\":\"$check\",\"exit\":$status,\"ok\":$(grep -c '^OK' "$out/$check.txt"),\"fail\":$(grep -c '^FAIL' "$out/$check.txt")}" | tee -a "$results"
done
grep '^OK.*ddp-' "$out/ddp.txt"

# A rank that dies: started by hand (no launcher to stop the group), rank 1 exits at once, rank 0 enters an all_reduce
# with a 5 s timeout and must be ended by the NCCL watchdog (exit 124) instead of hanging.
"$run" kiln --version > /dev/null 2>&1
for rank in 0 1; do
  RANK=$rank LOCAL_RANK=$rank WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 KILN_BENCH_TIMEOUT_S=5 \
    timeout -s KILL 120 "$run" Kiln.Distributed.Benchmarks deadrank > "$logs/deadrank$rank.out" 2> "$logs/deadrank$rank.err" &
  pids[$rank]=$!
done
wait "${pids[0]}"; status=$?
ended=$(date +%s%3N)
wait "${pids[1]}"
entered=$(sed -n 's/.*enters all_reduce at \([0-9]*\).*/\1/p' "$logs/deadrank0.out")
message=$(grep -h 'Kiln.Distributed:' "$logs/deadrank0.err" | head -1 | sed 's/"/\\"/g')
echo "{\"check\":\"deadrank\",\"exit\":$status,\"seconds_after_entering\":$(( (ended - ${entered:-$ended}) / 1000 )).$(( (ended - ${entered:-$ended}) % 1000 / 100 )),\"timeout_s\":5,\"message\":\"$message\"}" | tee -a "$results"

for i in 1 2; do
  agent "busbw$i" busbw 256
  sed 's/^{/{"check":"busbw",/' "$logs/busbw$i/attempt_0/0/stdout.log" | tee -a "$results"
  torchrun --standalone --nproc-per-node 2 "$here/torch_allreduce.py" 256 2> "$logs/torch_busbw$i.err" | sed 's/^{/{"check":"busbw",/' | tee -a "$results"
done

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(large medium small)
for config in "${configs[@]}"; do
  [ "$config" = none ] && continue
  flags=$(lm_flags "$config") || exit 2
  tag="s/^{/{\"check\":\"lm\",\"config\":\"$config\",/"
  {
    "$run" Kiln.Distributed.Benchmarks lm $flags --optimizer fused 2> "$logs/lm-$config-kiln1.err" | sed "$tag"
    for overlap in true false; do
      agent "lm-$config-$overlap" lm $flags --optimizer fused --overlap $overlap
      sed "$tag" "$logs/lm-$config-$overlap/attempt_0/0/stdout.log"
    done
    python3 "$here/torch_tiny_gpt.py" $flags 2> "$logs/lm-$config-torch1.err" | sed "$tag"
    torchrun --standalone --nproc-per-node 2 "$here/torch_tiny_gpt.py" $flags 2> "$logs/lm-$config-torch2.err" | sed "$tag"
  } | tee -a "$results"
done
python3 "$here/summarize_gpu.py" "$results" | tee "$out/summary.txt"
