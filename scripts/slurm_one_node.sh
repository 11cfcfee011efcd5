#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, to test profiles/slurm (tests/test_slurm.py) or to try it by
# hand. Needs root and Debian's packages `slurm-wlm` and `munge`:
#
#   apt-get install slurm-wlm munge
#   scripts/slurm_one_node.sh start             # then: sinfo; sbatch --wrap hostname; squeue
#   scripts/slurm_one_node.sh stop
#
# Usage: slurm_one_node.sh start|stop|status [DIR]
# DIR (default $LST_SLURM_DIR, else /tmp/lst-slurm) holds the cluster's munge key and socket, state, spool,
# logs (log/slurmctld.log, log/slurmd.log) and pid files. The configuration goes where every Slurm command
# looks for it, /etc/slurm/slurm.conf (and gres.conf): the snakemake slurm plugin runs each job through a
# nested `srun` with SLURM_CONF removed from its environment, so a configuration elsewhere would not be found
# inside jobs. `start` refuses to replace a slurm.conf it did not write, and a cluster of another DIR that is
# still running; `stop` cancels the jobs, stops only the daemons whose pid files are in DIR and removes the
# files it wrote in /etc/slurm. The system's own munged is left alone: this one has its own key and socket.
#
# The cluster: munged (as user munge), slurmctld and slurmd (as root), no accounting (`sacct` does not work:
# snakemake needs --slurm-status-command squeue), ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
# SelectType=select/cons_tres, one node named after this host. Settings, from the environment:
#   LST_SLURM_PARTITIONS  partitions, all on the one node, the first one the default (default: "cpu gpu", the
#                         names in profiles/slurm)
#   LST_SLURM_CPUS, LST_SLURM_MEM_MB, LST_SLURM_GPUS
#                         the node's size (default: this machine's, from `slurmd -C`, and its /dev/nvidia<N>).
#                         A size above the machine's is declared as is (SlurmdParameters=config_overrides), so
#                         that a profile's real requests (8 CPUs and a GPU per training job) are submitted
#                         unchanged on a small machine; GPUs beyond the machine's are character devices like
#                         /dev/null in DIR/dev (jobs get CUDA_VISIBLE_DEVICES but see no GPU).
#   LST_SLURMCTLD_PORT, LST_SLURMD_PORT   (default 6817, 6818)
# Exit status of start: 0 when the node is idle and takes jobs; 2 when no cluster can run here (not root,
# programs missing, /etc/slurm/slurm.conf taken); 1 on any other failure (the logs in DIR say why).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 64
}

[[ $# -ge 1 && $# -le 2 ]] || usage
command=$1
dir=$(realpath -m "${2:-${LST_SLURM_DIR:-/tmp/lst-slurm}}")
etc=/etc/slurm
conf=$etc/slurm.conf
marker="# written by lst scripts/slurm_one_node.sh for $dir"
unset SLURM_CONF  # every command of this cluster reads $conf, as the jobs will

say() { echo "slurm_one_node: $*" >&2; }

unavailable() {
    say "cannot run a Slurm cluster here: $*"
    exit 2
}

pid_of() {  # the running process whose pid file is $1, if any
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

stop_daemon() {  # stop_daemon NAME PIDFILE: SIGTERM, then SIGKILL after 10 s
    local pid i
    pid=$(pid_of "$2") || { rm -f "$2"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$1 (pid $pid) did not stop on SIGTERM, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$2"
    say "stopped $1 (pid $pid)"
}

ours() {  # is $1 a file this script wrote for this DIR?
    [[ -f $1 ]] && [[ $(head -1 "$1") == "$marker" ]]
}

stop() {
    local i
    if pid_of "$dir/slurmctld.pid" >/dev/null && ours "$conf"; then
        # cancel the jobs first, so that no job outlives its slurmd
        timeout 10 scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z $(timeout 5 squeue --noheader --states=RUNNING,COMPLETING,PENDING 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_daemon slurmd "$dir/slurmd.pid"
    stop_daemon slurmctld "$dir/slurmctld.pid"
    stop_daemon munged "$dir/munge/munged.pid"
    for i in "$conf" "$etc/gres.conf"; do
        if ours "$i"; then rm -f "$i"; fi
    done
}

start() {
    local missing=() binary host real_cpus real_mem real_gpus gpus cpus mem partitions default i state owner
    [[ $(id -u) -eq 0 ]] || unavailable "not root (slurmd and munged need root)"
    for binary in munged mungekey munge runuser slurmctld slurmd sbatch srun squeue sinfo scancel; do
        command -v "$binary" >/dev/null || missing+=("$binary")
    done
    ((${#missing[@]} == 0)) || unavailable "missing ${missing[*]} (apt-get install slurm-wlm munge)"
    id munge >/dev/null 2>&1 || unavailable "no user munge (apt-get install munge)"
    if pid_of "$dir/slurmctld.pid" >/dev/null && ours "$conf"; then
        say "already running from $dir"
        return 0
    fi
    for i in "$conf" "$etc/gres.conf"; do
        [[ -e $i ]] || continue
        owner=$(head -1 "$i")
        if [[ $owner != "# written by lst scripts/slurm_one_node.sh for "* ]]; then
            unavailable "$i exists and was not written by this script"
        fi
        owner=${owner#\# written by lst scripts/slurm_one_node.sh for }
        if [[ $owner != "$dir" ]] && pid_of "$owner/slurmctld.pid" >/dev/null; then
            unavailable "a cluster of $owner is running (scripts/slurm_one_node.sh stop $owner)"
        fi
    done
    stop  # leftovers of a failed start
    rm -f "$conf" "$etc/gres.conf"  # leftovers of a cluster of another DIR that is gone

    host=$(hostname -s)
    read -r real_cpus real_mem < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
    real_gpus=$(find /dev -maxdepth 1 -regex '/dev/nvidia[0-9]+' | wc -l)
    cpus=${LST_SLURM_CPUS:-$real_cpus}
    mem=${LST_SLURM_MEM_MB:-$real_mem}
    gpus=${LST_SLURM_GPUS:-$real_gpus}
    read -r -a partitions <<<"${LST_SLURM_PARTITIONS:-cpu gpu}"

    mkdir -p "$dir"/{munge,state,spool,log} "$etc"
    rm -rf "$dir"/state/* "$dir"/spool/* "$dir"/log/* "$dir/munge/munged.log"  # a fresh cluster
    chmod 0755 "$dir" "$dir/munge"
    chown munge: "$dir/munge"
    # munge: a key of this cluster, a daemon on a socket of its own
    if [[ ! -s $dir/munge/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile="$dir/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" </dev/null >>"$dir/log/daemons.out" 2>&1 ||
        { say "munged did not start: $(tail -n 3 "$dir/log/daemons.out" "$dir/munge/munged.log" 2>&1)"; exit 1; }
    munge --socket="$dir/munge/munge.socket" --no-input >/dev/null ||
        { say "munged does not answer on $dir/munge/munge.socket"; exit 1; }

    {
        echo "$marker"
        echo "ClusterName=lst"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=${LST_SLURMCTLD_PORT:-6817}"
        echo "SlurmdPort=${LST_SLURMD_PORT:-6818}"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        echo "AuthInfo=socket=$dir/munge/munge.socket"
        echo "StateSaveLocation=$dir/state"
        echo "SlurmdSpoolDir=$dir/spool"
        echo "SlurmctldPidFile=$dir/slurmctld.pid"
        echo "SlurmdPidFile=$dir/slurmd.pid"
        echo "SlurmctldLogFile=$dir/log/slurmctld.log"
        echo "SlurmdLogFile=$dir/log/slurmd.log"
        echo "SlurmctldDebug=info"
        echo "SlurmdDebug=info"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core_Memory"
        echo "AccountingStorageType=accounting_storage/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "JobCompType=jobcomp/none"
        echo "MpiDefault=none"
        echo "ReturnToService=2"
        echo "MinJobAge=3600"  # finished jobs stay in squeue and scontrol for an hour
        echo "SchedulerParameters=sched_interval=2"
        if ((cpus > real_cpus || mem > real_mem || gpus > real_gpus)); then
            echo "SlurmdParameters=config_overrides"
        fi
        if ((gpus > 0)); then
            echo "GresTypes=gpu"
            echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN"
        else
            echo "NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
        fi
        default=YES
        for i in "${partitions[@]}"; do
            echo "PartitionName=$i Nodes=$host Default=$default MaxTime=INFINITE State=UP"
            default=NO
        done
    } >"$conf"
    if ((gpus > real_gpus)); then  # Slurm drops a GPU without a device file
        mkdir -p "$dir/dev"
        for ((i = 0; i < gpus; i++)); do
            [[ -c $dir/dev/gpu$i ]] || mknod "$dir/dev/gpu$i" c 1 3
        done
        printf '%s\nNodeName=%s Name=gpu File=%s\n' "$marker" "$host" "$dir/dev/gpu[0-$((gpus - 1))]" >"$etc/gres.conf"
    elif ((gpus > 0)); then
        printf '%s\nNodeName=%s Name=gpu File=/dev/nvidia[0-%d]\n' "$marker" "$host" $((gpus - 1)) >"$etc/gres.conf"
    fi

    # daemons keep no descriptor of the caller: a caller reading this script's output would wait for them
    for i in slurmctld slurmd; do
        if ! "$i" </dev/null >>"$dir/log/daemons.out" 2>&1; then
            say "$i did not start: $(tail -n 5 "$dir/log/daemons.out" "$dir/log/$i.log" 2>&1)"
            stop
            exit 1
        fi
    done
    for ((i = 0; i < 60; i++)); do
        for binary in slurmctld slurmd; do
            if [[ -s $dir/$binary.pid ]] && ! pid_of "$dir/$binary.pid" >/dev/null; then
                say "$binary died: $(tail -n 5 "$dir/log/$binary.log")"
                stop
                exit 1
            fi
        done
        state=$(timeout 5 sinfo --noheader --nodes="$host" --format=%t 2>/dev/null | head -1 || true)
        if [[ $state == idle* ]]; then
            say "node $host ($cpus CPUs, $mem MB, $gpus GPUs) idle in partitions ${partitions[*]}; logs in $dir/log"
            return 0
        fi
        sleep 0.5
    done
    say "node $host not idle after 30 s (state '${state:-none}'):"
    tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    stop
    exit 1
}

case $command in
    start) start ;;
    stop) stop ;;
    status)
        if ! pid_of "$dir/slurmctld.pid" >/dev/null; then
            say "not running from $dir"
            exit 3
        fi
        sinfo
        squeue --states=all
        ;;
    *) usage ;;
esac
