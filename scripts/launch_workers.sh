#!/usr/bin/env bash
# Start search workers by hand: one per GPU (or N on the CPU), all on one storage, each with its own log.
# `asr-recon study launch` does the same with progress and clean stops; this is for clusters and tmux
# sessions where you start workers yourself (possibly on several machines sharing a PostgreSQL storage).
#
#   scripts/launch_workers.sh SPEC STORAGE [GPU_IDS | cpu:N]
#   scripts/launch_workers.sh studies/ds1_baseline.yaml postgresql+psycopg://user@db:5432/optuna 0,1,2,3
#   scripts/launch_workers.sh studies/demo.yaml sqlite:///results/studies.db cpu:2
#
# Ctrl-C (or SIGTERM to this script) sends SIGTERM to every worker: each marks its running trial FAIL
# and exits. A worker killed harder (SIGKILL, lost machine) is caught by heartbeats on RDB storages:
# its trial becomes FAIL after the grace period and another worker runs it again.
set -euo pipefail

spec=${1:?usage: $0 SPEC STORAGE [GPU_IDS | cpu:N]}
storage=${2:?usage: $0 SPEC STORAGE [GPU_IDS | cpu:N]}
where=${3:-cpu:1}
python=${PYTHON:-python}
logs=${LOG_DIR:-results/logs/manual}
mkdir -p "$logs"
stamp=$(date +%Y%m%d-%H%M%S)

pids=()
stop() {
    trap - INT TERM
    echo "stopping ${#pids[@]} workers" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait
    exit 130
}
trap stop INT TERM

start() {  # start INDEX THREADS [CUDA_VISIBLE_DEVICES]
    local index=$1 threads=$2 log="$logs/$stamp-w$1.log"
    CUDA_VISIBLE_DEVICES=${3-${CUDA_VISIBLE_DEVICES-}} OMP_NUM_THREADS=$threads \
        "$python" -m search.worker "$spec" --storage "$storage" --worker-index "$index" --threads "$threads" \
        --log-file "$log" --quiet >>"$log" 2>&1 &
    pids+=($!)
    echo "worker $index: pid $! log $log" >&2
}

cores=$(nproc)
if [[ $where == cpu:* ]]; then
    n=${where#cpu:}
    threads=$(( cores / n > 0 ? cores / n : 1 ))
    for ((k = 0; k < n; k++)); do start "$k" "$threads"; done
else
    IFS=, read -r -a gpus <<<"$where"
    threads=$(( cores / ${#gpus[@]} > 0 ? cores / ${#gpus[@]} : 1 ))
    for k in "${!gpus[@]}"; do start "$k" "$threads" "${gpus[$k]}"; done
fi
wait
