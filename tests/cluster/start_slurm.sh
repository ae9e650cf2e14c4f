#!/usr/bin/env bash
# Bring up a real single-node SLURM (controller, one compute node, accounting
# through slurmdbd + MariaDB so that sacct works) on this machine, from
# Debian's packages, for the cluster test. Run as root.
#
#   tests/cluster/start_slurm.sh [STATE_DIR]     (default /tmp/handbone-slurm)
#
# Prints `export SLURM_CONF=...`; the node gets this machine's cores and
# memory and three count-only GPUs (GRES without devices), so jobs asking
# for --gpus=1 are scheduled like on a GPU cluster and run on the CPU.
set -euo pipefail
state=${1:-/tmp/handbone-slurm}
host=$(hostname -s)
cpus=$(nproc)
memory=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))

packages="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
missing=""
for package in $packages; do
    dpkg -s "$package" > /dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
    apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing > /dev/null
fi

mkdir -p "$state"/{spool,ctld,log,run}
previous=$(cat "$state/slurm.conf" 2>/dev/null || true)
cat > "$state/slurm.conf" <<CONF
ClusterName=handbone
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# sacct then shows each job's GPUs (AllocTRES) and the executor's comment
# (rule_<rule>_wildcards_...), so a test can count jobs per rule.
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SchedulerParameters=defer_batch
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$memory Gres=gpu:3 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
CONF
# SLURM drops GPUs without device files and wants character devices: three
# stand-ins with the numbers of /dev/null, /dev/zero and /dev/full (no job
# touches them: task/none binds nothing).
mkdir -p "$state/dev"
for minor in 3 5 7; do
    [ -e "$state/dev/gpu$(( (minor - 3) / 2 ))" ] || mknod "$state/dev/gpu$(( (minor - 3) / 2 ))" c 1 "$minor"
done
echo "NodeName=$host Name=gpu File=$state/dev/gpu[0-2]" > "$state/gres.conf"
cat > "$state/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$state/log/slurmdbd.log
PidFile=$state/run/slurmdbd.pid
CONF
chmod 600 "$state/slurmdbd.conf"
export SLURM_CONF=$state/slurm.conf
# Job steps (srun inside a job, as the Snakemake plugin runs them) look for
# the default path and do not see SLURM_CONF: link the files there too.
mkdir -p /etc/slurm
for file in slurm.conf gres.conf slurmdbd.conf; do
    if [ -e "/etc/slurm/$file" ] && [ "$(readlink -f "/etc/slurm/$file")" != "$state/$file" ]; then
        echo "/etc/slurm/$file exists and is not this test cluster's; not touching it" >&2
        exit 1
    fi
    ln -sf "$state/$file" "/etc/slurm/$file"
done

# munge: the package made a key; the daemon refuses to run as root.
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged
# MariaDB for slurmdbd.
if ! pgrep -x mariadbd > /dev/null && ! pgrep -x mysqld > /dev/null; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe > "$state/log/mariadb.log" 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping > /dev/null 2>&1 && break; sleep 1; done
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
pgrep -x slurmdbd > /dev/null || slurmdbd   # reads slurmdbd.conf beside $SLURM_CONF
for _ in $(seq 30); do sacctmgr -i show cluster > /dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster handbone > /dev/null 2>&1 || true
if [ "$previous" != "$(cat "$state/slurm.conf")" ] && pgrep -x slurmctld > /dev/null; then
    # A changed configuration (e.g. from an older version of this script)
    # needs the daemons restarted.
    pkill -x slurmctld || true
    pkill -x slurmd || true
    for _ in $(seq 30); do pgrep -x slurmctld > /dev/null || pgrep -x slurmd > /dev/null || break; sleep 1; done
fi
pgrep -x slurmctld > /dev/null || slurmctld -f "$state/slurm.conf"
pgrep -x slurmd > /dev/null || slurmd -f "$state/slurm.conf"
for _ in $(seq 60); do
    sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed" && break
    sleep 1
done
sinfo -h -o %T | grep -qE "idle|mixed" || { echo "SLURM did not come up; see $state/log" >&2; exit 1; }
echo "export SLURM_CONF=$SLURM_CONF"
