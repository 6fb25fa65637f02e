#!/usr/bin/env bash
# Time from a worker's death to the restarted worker group running again, for `kiln agent`.
#
#   benchmarks/launch/agent-restart.sh [TRIALS]
#
# Two shapes: one node x 4 workers (--standalone) and two nodes x 2 workers (two agents over the embedded c10d
# store on 127.0.0.1). In each trial rank 1 kills itself with SIGKILL 0.5 s after it starts; every worker of the
# second attempt (TORCHELASTIC_RESTART_COUNT=1) records when it started and exits 0. The latency is
# max(start of attempt 1 over all ranks) - time of death: detection (--monitor-interval 0.1 s, torch's default),
# stopping the survivors (SIGTERM), the job-wide restart counter, the new rendezvous round, fork/exec of the workers.
# Needs a built kiln (dotnet build -c Release); KILN=path/to/kiln.dll overrides the default.
set -euo pipefail
cd "$(dirname "$0")/../.."
TRIALS=${1:-5}
KILN=${KILN:-src/Kiln.Cli/bin/Release/net10.0/kiln.dll}
[ -f "$KILN" ] || { echo "no $KILN: run dotnet build -c Release first" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/worker.sh" <<'SH'
#!/bin/sh
date +%s%N > "$OUT/start_${TORCHELASTIC_RESTART_COUNT}_$RANK"
if [ "$TORCHELASTIC_RESTART_COUNT" = 0 ]; then
  if [ "$RANK" = 1 ]; then sleep 0.5; date +%s%N > "$OUT/death"; kill -9 $$; fi
  sleep 30 & wait
fi
exit 0
SH
chmod +x "$WORK/worker.sh"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

latency_ms() { # OUT WORLD
  local out=$1 world=$2 last=0 t
  for ((r = 0; r < world; r++)); do t=$(cat "$out/start_1_$r"); ((t > last)) && last=$t; done
  echo $(( (last - $(cat "$out/death")) / 1000000 ))
}

run_trial() { # SHAPE TRIAL
  local shape=$1 trial=$2 out="$WORK/$1-$2"
  mkdir -p "$out"
  export OUT=$out
  if [ "$shape" = 1x4 ]; then
    dotnet "$KILN" agent --standalone --nproc-per-node 4 --max-restarts 1 -- "$WORK/worker.sh" > "$out/agent.log" 2>&1
    latency_ms "$out" 4
  else
    local port; port=$(free_port)
    local flags=(--nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint "127.0.0.1:$port" --rdzv-id "bench$trial" --max-restarts 1)
    dotnet "$KILN" agent "${flags[@]}" -- "$WORK/worker.sh" > "$out/agent0.log" 2>&1 &
    local a=$!
    dotnet "$KILN" agent "${flags[@]}" -- "$WORK/worker.sh" > "$out/agent1.log" 2>&1 &
    local b=$!
    wait "$a" "$b"
    latency_ms "$out" 4
  fi
}

echo "kiln agent restart latency, worker SIGKILL -> all workers of attempt 1 started ($(nproc) cores, $TRIALS trials)"
for shape in 1x4 2x2; do
  results=()
  for ((i = 0; i < TRIALS; i++)); do results+=("$(run_trial "$shape" "$i")"); done
  sorted=$(printf '%s\n' "${results[@]}" | sort -n)
  echo "$shape: ms = ${results[*]} | median $(echo "$sorted" | sed -n "$(( (TRIALS + 1) / 2 ))p") | max $(echo "$sorted" | tail -1)"
done
