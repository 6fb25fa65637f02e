#!/usr/bin/env bash
# Starts a private single-node Slurm for Kiln's tests: munged with its own socket and key, slurmctld and slurmd as root,
# all configured by a minimal slurm.conf for this machine under one folder. Idempotent: when the daemons it recorded are
# still alive and the node answers, it starts nothing.
#
#   bash eng/slurm/start.sh [FOLDER]      # FOLDER defaults to $KILN_SLURM_HOME or /tmp/kiln-slurm
#
# Prints, as its last two lines, "SLURM_CONF=<FOLDER>/slurm.conf" and either "started" (this call started the daemons;
# stop them with eng/slurm/stop.sh) or "running" (they were already up). Needs root (slurmd runs jobs as their users).
#
# Sharing: with KILN_SLURM_LEASE=PID (a process that uses the cluster, e.g. a test run), the call records a lease in
# FOLDER/leases/PID, and "KILN_SLURM_LEASE=PID stop.sh" stops the daemons only when no other living process holds one
# (test runs in parallel share one cluster). Daemons started without a lease are left alone by leased stops.
# Nodes: KILN_SLURM_NODES (default 4) virtual nodes kiln-1..kiln-N, each a slurmd on this machine with its CPUs and an
# equal share of its memory, so that heterogeneous jobs (whose components Slurm puts on different nodes) can run here.
# Ports: KILN_SLURM_PORT (slurmctld, default 16817), then one per slurmd; away from a system Slurm's 6817/6818.
set -euo pipefail

home=${1:-${KILN_SLURM_HOME:-/tmp/kiln-slurm}}
port=${KILN_SLURM_PORT:-16817}
nodes=${KILN_SLURM_NODES:-4}
conf="$home/slurm.conf"

if [ "$(id -u)" -ne 0 ]; then
  echo "eng/slurm/start.sh: needs root (slurmd starts jobs as their users)" >&2
  exit 1
fi
for tool in munged mungekey slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "eng/slurm/start.sh: $tool is not installed (apt-get install munge slurmctld slurmd slurm-client)" >&2
    exit 1
  }
done

mkdir -p "$home"
# One start or stop at a time (test runs in parallel share the cluster).
exec 9>"$home/start.lock"
flock -w 60 9
lease() {
  if [ -n "${KILN_SLURM_LEASE:-}" ]; then
    mkdir -p "$home/leases"
    : >"$home/leases/$KILN_SLURM_LEASE"
  fi
}

alive() { [ -s "$home/$1.pid" ] && kill -0 "$(cat "$home/$1.pid")" 2>/dev/null; }
all_alive() {
  alive munged && alive slurmctld || return 1
  for i in $(seq 1 "$nodes"); do alive "slurmd-kiln-$i" || return 1; done
}
# How many nodes answer (idle, mixed, allocated or completing), 0 when the controller does not.
nodes_up() {
  SLURM_CONF="$conf" timeout 5 sinfo -h -N -o %T 2>/dev/null | grep -c -E '^(idle|mixed|allocated|completing)$' || true
}

if [ -f "$conf" ] && all_alive && [ "$(nodes_up)" -eq "$nodes" ]; then
  lease
  echo "SLURM_CONF=$conf"
  echo "running"
  exit 0
fi

# Anything half-started by an earlier call goes first (only the pids this script recorded).
KILN_SLURM_LOCKED=1 KILN_SLURM_LEASE= bash "$(dirname "$0")/stop.sh" "$home" >/dev/null 2>&1 || true
rm -rf "$home/leases" "$home/keep"

mkdir -p "$home/state" "$home/spool" "$home/log" "$home/munge"
chmod 700 "$home/munge"
if [ ! -s "$home/munge/munge.key" ]; then
  if ! mungekey --create --keyfile="$home/munge/munge.key" >/dev/null 2>&1; then
    dd if=/dev/urandom of="$home/munge/munge.key" bs=1024 count=1 status=none
  fi
fi
chmod 400 "$home/munge/munge.key"

host=$(hostname -s)
# This machine as slurmd sees it: CPUs, sockets, cores, threads and memory (MiB).
hw=$(slurmd -C | head -n 1)
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$hw"; }
cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore)
memory=$(field RealMemory)
# Leave the machine a tenth of its memory and split the rest between the virtual nodes; the tests ask for little.
memory=$((memory * 9 / 10 / nodes))

: >"$home/plugstack.conf"
cat >"$conf" <<CONF
# Written by eng/slurm/start.sh: a private single-node cluster for Kiln's tests.
ClusterName=kiln
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$home/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$home/state
SlurmdSpoolDir=$home/spool/%n
SlurmctldPidFile=$home/slurmctld.pid
SlurmdPidFile=$home/slurmd-%n.pid
SlurmctldLogFile=$home/log/slurmctld.log
SlurmdLogFile=$home/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$home/plugstack.conf
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SchedulerType=sched/backfill
# Heterogeneous jobs are scheduled by the backfill scheduler only: run it every second.
SchedulerParameters=bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to squeue for an hour (there is no accounting database for sacct).
MinJobAge=3600
KillWait=5
InactiveLimit=0
MailProg=/bin/true
CONF
for i in $(seq 1 "$nodes"); do
  echo "NodeName=kiln-$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + i)) CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory State=UNKNOWN" >>"$conf"
  mkdir -p "$home/spool/kiln-$i"
done
echo "PartitionName=debug Nodes=kiln-[1-$nodes] Default=YES MaxTime=INFINITE State=UP" >>"$conf"

export SLURM_CONF="$conf"

# The daemons get neither the lock (fd 9) nor the caller's stdout/stderr: they log to $home/log.
if ! alive munged; then
  munged --force --socket="$home/munge/munge.socket" --key-file="$home/munge/munge.key" \
    --pid-file="$home/munged.pid" --log-file="$home/log/munged.log" --seed-file="$home/munge/munged.seed" </dev/null >>"$home/log/daemons.log" 2>&1 9>&-
fi
# slurmctld and slurmd daemonize and write their pid files themselves.
slurmctld -f "$conf" </dev/null >>"$home/log/daemons.log" 2>&1 9>&-
for i in $(seq 1 "$nodes"); do
  slurmd -f "$conf" -N "kiln-$i" </dev/null >>"$home/log/daemons.log" 2>&1 9>&-
done

deadline=$((SECONDS + 30))
until [ "$(nodes_up)" -eq "$nodes" ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "eng/slurm/start.sh: the $nodes nodes did not become idle within 30 s; logs in $home/log" >&2
    tail -n 20 "$home/log/"*.log >&2 || true
    exit 1
  fi
  sleep 0.2
done
if [ -n "${KILN_SLURM_LEASE:-}" ]; then
  lease
else
  : >"$home/keep"
fi
echo "SLURM_CONF=$conf"
echo "started"
