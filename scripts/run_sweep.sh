#!/usr/bin/env bash
# The original DS1 sweeps, one GPU per process: learning rate (top-grad 1.0), then top-grad fraction (lr 0.5),
# on 1-2 s clips. Each process sees one device through CUDA_VISIBLE_DEVICES; results land in runs/sweep_*.
#   GPUS="0 1 2 3 4" DATA=/data/librispeech MAX_ITER=1000 scripts/run_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
read -r -a GPUS <<< "${GPUS:-0 1 2 3 4}"
DATA_FLAG=${DATA:+--data "$DATA"}
COMMON="--batch_min_dur 1000 --batch_max_dur 2000 --batch-start ${START:-0} --batch-end ${END:-100} --max_iter ${MAX_ITER:-1000}"

run() {  # run GPU_INDEX NAME FLAGS...
    local gpu=${GPUS[$(( $1 % ${#GPUS[@]} ))]} name=$2
    shift 2
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$gpu "$PY" scripts/reconstruct_ds1_run_many_sample.py $COMMON $DATA_FLAG "$@" \
        --out "runs/sweep_$name" > "runs/sweep_$name.out" 2>&1 &
}

mkdir -p runs
i=0
for lr in 0.001 0.01 0.1 0.5 1.0; do run $i "lr_$lr" --lr "$lr"; i=$((i + 1)); done
wait
i=0
for top in 0.2 0.4 0.6 0.8; do run $i "top_$top" --lr 0.5 --top_grad_percentage "$top"; i=$((i + 1)); done
wait
echo "done: runs/sweep_*/summary.json"
