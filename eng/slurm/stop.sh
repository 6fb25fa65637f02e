#!/usr/bin/env bash
# Stops the daemons eng/slurm/start.sh started, by the pids it recorded in FOLDER (default $KILN_SLURM_HOME or
# /tmp/kiln-slurm): the slurmd of every virtual node and slurmctld together, then munged (which they authenticate with).
# SIGTERM first, SIGKILL for one still alive after 10 s. Leaves the folder (logs, state) in place.
#
# With KILN_SLURM_LEASE=PID it first drops that lease (see start.sh) and stops nothing while another living process
# holds a lease, or when the daemons were started without a lease (by hand); it prints "in use" or "kept" then.
set -uo pipefail

home=${1:-${KILN_SLURM_HOME:-/tmp/kiln-slurm}}
[ -d "$home" ] || exit 0
if [ -z "${KILN_SLURM_LOCKED:-}" ]; then
  exec 9>"$home/start.lock"
  flock -w 60 9
fi

if [ -n "${KILN_SLURM_LEASE:-}" ]; then
  rm -f "$home/leases/$KILN_SLURM_LEASE"
  shopt -s nullglob
  for lease in "$home"/leases/*; do
    if kill -0 "$(basename "$lease")" 2>/dev/null; then
      echo "in use"
      exit 0
    fi
    rm -f "$lease"
  done
  shopt -u nullglob
  if [ -f "$home/keep" ]; then
    echo "kept"
    exit 0
  fi
fi

# stop NAME…: TERM to each recorded, living pid, wait for all of them, KILL the stragglers, remove the pid files.
stop() {
  local name pid pids=()
  for name in "$@"; do
    [ -s "$home/$name.pid" ] || continue
    pid=$(cat "$home/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  for name in "$@"; do
    rm -f "$home/$name.pid"
  done
}

shopt -s nullglob
slurm=(slurmctld)
for pidfile in "$home"/slurmd-*.pid; do
  slurm+=("$(basename "$pidfile" .pid)")
done
stop "${slurm[@]}"
stop munged
rm -f "$home/keep"
exit 0
