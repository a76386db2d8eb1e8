#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1 for the tests of `hpsearch launch --backend slurm`.
#
#   .ci/slurm.sh start DIR   install slurm-wlm + munge if missing (root, Debian), write
#                            DIR/slurm.conf + DIR/gres.conf, start a munged of its own,
#                            slurmctld and slurmd, wait until the node is idle; prints
#                            SLURM_CONF=DIR/slurm.conf on its last line
#   .ci/slurm.sh stop DIR    stop what `start DIR` started (by the pids it recorded)
#
# The node declares 4 fake GPUs (gres on /dev/tty0-3: Slurm sets CUDA_VISIBLE_DEVICES per task
# as on a real GPU node) and 8 CPUs (config_overrides: more array tasks at once than cores).
# Ports: $HPSEARCH_SLURM_PORT (slurmctld, default 16917) and the next one (slurmd); the
# system's 6817/6818 are left alone. No cgroup.conf: Debian's 22.05 has no "disabled" plugin.
# AuthInfo=cred_expire=10: a requeued task waits 11 s, not Slurm's default 121 s, to run again.
set -euo pipefail
action="${1:?usage: slurm.sh start|stop DIR}"
dir="${2:?usage: slurm.sh start|stop DIR}"
port="${HPSEARCH_SLURM_PORT:-16917}"
deadline_s="${HPSEARCH_SLURM_START_S:-60}"

fail() { echo "slurm.sh: $*" >&2; exit 1; }

install_if_missing() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return 0
    [ "$(id -u)" = 0 ] || fail "slurm-wlm/munge are not installed and this is not root"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) \
        >/dev/null 2>&1 || fail "apt-get install slurm-wlm munge failed"
}

write_config() {
    mkdir -p "$dir/state" "$dir/spool"
    cat >"$dir/slurm.conf" <<EOF
ClusterName=hpsearchtest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10,socket=$dir/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
ReturnToService=2
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldPort=$port
SlurmdPidFile=$dir/slurmd.pid
SlurmdPort=$((port + 1))
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SwitchType=switch/none
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=10
MinJobAge=30
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 Gres=gpu:4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    echo "Name=gpu File=/dev/tty[0-3]" >"$dir/gres.conf"
}

start_munge() {
    # A munged of this cluster's own (socket in DIR/munge, named by AuthInfo above): another
    # cluster's stop, or the system's munged, never takes this one's authentication away.
    mkdir -p "$dir/munge" && chmod 0700 "$dir/munge"
    /usr/sbin/munged --force --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --seed-file="$dir/munge/munged.seed" \
        --log-file="$dir/munge/munged.log"
    local end=$((SECONDS + deadline_s))
    until munge -n -S "$dir/munge/munge.socket" </dev/null \
            | unmunge -S "$dir/munge/munge.socket" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || fail "munged did not answer on $dir/munge/munge.socket"
        sleep 0.2
    done
    cp "$dir/munge/munged.pid" "$dir/munged.pid"
}

wait_idle() {
    local end=$((SECONDS + deadline_s)) state=""
    while [ $SECONDS -lt $end ]; do
        state="$(sinfo -h -n localhost -o %T 2>/dev/null || true)"
        [ "$state" = idle ] && return 0
        sleep 0.5
    done
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    fail "node not idle after ${deadline_s}s (state: '${state:-none}'); logs in $dir"
}

stop_pid_file() {
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

case "$action" in
start)
    install_if_missing
    for p in "$port" "$((port + 1))"; do
        port_free "$p" || fail "port $p is in use (another Slurm?): set HPSEARCH_SLURM_PORT"
    done
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    write_config
    export SLURM_CONF="$dir/slurm.conf"
    start_munge
    slurmctld -f "$SLURM_CONF" -i   # -i: ignore state left by an earlier run of this DIR
    slurmd -f "$SLURM_CONF"
    wait_idle
    echo "SLURM_CONF=$SLURM_CONF"
    ;;
stop)
    [ -d "$dir" ] || exit 0
    dir="$(cd "$dir" && pwd)"
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munged.pid"
    ;;
*)
    fail "unknown action '$action' (start or stop)"
    ;;
esac
