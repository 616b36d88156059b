#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to run and test the workflow's slurm profile.
#
#   bash tools/slurm/one-node.sh up       # install (apt, once), configure, start, wait until idle
#   bash tools/slurm/one-node.sh status   # exit 0 when the node is up and usable
#   bash tools/slurm/one-node.sh down     # stop the daemons and forget the job state
#
# Debian/Ubuntu, as root. PID 1 need not be systemd: munged, slurmctld and slurmd are started
# by hand. `up` is idempotent (a running, idle cluster is left alone) and prints the partition
# name last; `down` ends only the daemons named in their pid files. No accounting database:
# use the slurm profile's `slurm-status-command: squeue` (sacct fails here).
# The node gets one fake GPU (GRES gpu:1 backed by /dev/null) so that jobs asking for
# `gpu: 1` are scheduled on a CPU-only machine; they then train on the CPU.
# Settings: FLUKELINE_SLURM_PARTITION (default flukeline).
set -euo pipefail

PARTITION=${FLUKELINE_SLURM_PARTITION:-flukeline}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARK="# Written by flukeline tools/slurm/one-node.sh"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
HOST=$(hostname -s)

say() { echo "one-node.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {
    sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true
}

install_packages() {
    local missing=()
    for bin in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
        [ -x "$bin" ] || missing+=("$bin")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "SLURM is not installed (${missing[*]}) and there is no apt-get"
    say "installing slurmctld slurmd slurm-client munge with apt-get"
    # Keep the packages' maintainer scripts from starting services (no init system here).
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        slurmctld slurmd slurm-client munge; } >&2 || rc=$?
    [ -n "$policy" ] && rm -f "$policy"
    [ $rc -eq 0 ] || die "apt-get install failed ($rc)"
}

write_config() {
    # Refuse to overwrite a slurm.conf that someone else wrote (a real cluster's).
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not touching it"
    fi
    # The hardware line as slurmd sees it (CPUs, sockets, cores, threads), so the node is not
    # drained for a topology mismatch; memory: 90% of RAM (SLURM does not enforce it here).
    local hw mem_mb
    hw=$(/usr/sbin/slurmd -C 2>/dev/null | grep -m1 '^NodeName=' | sed -e 's/^NodeName=[^ ]* //' -e 's/ *RealMemory=[0-9]*//')
    [ -n "$hw" ] || hw="CPUs=$(nproc)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    local new
    new=$(cat <<EOF
$MARK (a one-node test cluster; \`one-node.sh down\` stops it).
ClusterName=flukeline
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol this long (the squeue status check needs >= 120 s;
# an hour lets a test list every job of a run).
MinJobAge=3600
MailProg=/bin/true
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 $hw RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
    local gres="$MARK
NodeName=$HOST Name=gpu File=/dev/null"
    mkdir -p /etc/slurm
    if [ "$(cat "$CONF" 2>/dev/null)" != "$new" ] || [ "$(cat "$GRES_CONF" 2>/dev/null)" != "$gres" ]; then
        if alive "$CTLD_PID" || alive "$SLURMD_PID"; then
            say "configuration changed: restarting the daemons"
            stop_daemons
        fi
        printf '%s\n' "$new" > "$CONF"
        printf '%s\n' "$gres" > "$GRES_CONF"
    fi
}

start_daemons() {
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm
    chown munge:munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile /etc/munge/munge.key
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    alive "$MUNGE_PID" || runuser -u munge -- /usr/sbin/munged
    alive "$CTLD_PID" || /usr/sbin/slurmctld
    alive "$SLURMD_PID" || /usr/sbin/slurmd
}

wait_idle() {
    local state="" i
    for i in $(seq 1 60); do
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated|completing) return 0 ;;
            down*|drain*|inval*|fail*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    say "node $HOST is not idle after 60 s (state: ${state:-no answer}); last log lines:"
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    return 1
}

stop_daemons() {
    local pidfile pid i
    for pidfile in "$SLURMD_PID" "$CTLD_PID" "$MUNGE_PID"; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
        # A stale pid file breaks a later start (and apt-get purge).
        rm -f "$pidfile"
    done
}

case "${1:-}" in
    up)
        [ "$(id -u)" -eq 0 ] || die "run as root (installs packages and starts daemons)"
        install_packages
        write_config
        start_daemons
        wait_idle || die "the node did not come up"
        say "node $HOST is $(node_state) in partition $PARTITION"
        echo "$PARTITION"
        ;;
    status)
        alive "$CTLD_PID" && alive "$SLURMD_PID" || { say "daemons not running"; exit 1; }
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated|completing) say "node $HOST: $state"; exit 0 ;;
            *) say "node $HOST: ${state:-no answer}"; exit 1 ;;
        esac
        ;;
    down)
        [ "$(id -u)" -eq 0 ] || die "run as root"
        stop_daemons
        # Forget jobs and node state, so that the next `up` starts clean.
        rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
        # Remove the config this script wrote (`up` writes it again): with a slurm.conf naming a
        # controller that is down, every `snakemake` call on this machine waited ~9 s, because
        # the SLURM executor plugin asks `scontrol show config` (10 s timeout) when it loads.
        for conf in "$CONF" "$GRES_CONF"; do
            if [ -e "$conf" ] && grep -qF "$MARK" "$conf"; then rm -f "$conf"; fi
        done
        say "stopped"
        ;;
    *)
        echo "usage: $0 up|status|down" >&2
        exit 2
        ;;
esac
