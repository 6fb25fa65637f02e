#!/usr/bin/env bash
# Stops the daemons eng/slurm/start.sh started, by the pids it recorded in FOLDER (default $KILN_SLURM_HOME or
# /tmp/kiln-slurm): the slurmd of every virtual node, then slurmctld, then munged. Leaves the folder (logs, state) in place.
set -uo pipefail

home=${1:-${KILN_SLURM_HOME:-/tmp/kiln-slurm}}

stop() {
  local pidfile="$home/$1.pid" pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

shopt -s nullglob
for pidfile in "$home"/slurmd-*.pid; do
  name=$(basename "$pidfile" .pid)
  stop "$name"
done
stop slurmctld
stop munged
exit 0
