#!/usr/bin/env bash
# A first CPU look at the protocol presets (issue 11): reach-v3 (MT1) and MT10, protocol=default
# beside protocol=metaworld_plus (and its multi-head MTMHSAC on MT10), 2 seeds each, 2 runs at a time,
# then one report. Networks and batches are shrunk alike for every condition so that the whole study
# fits a few hours of 2 CPU cores (see docs/results/protocols_cpu/README.md for what that means).
#
#   OUT=docs/results/protocols_cpu RUNS=runs/protocol_study JOBS=2 scripts/run_protocol_study.sh
set -euo pipefail
RUNS=${RUNS:-runs/protocol_study}
OUT=${OUT:-docs/results/protocols_cpu}
JOBS=${JOBS:-2}
MTRL=${MTRL:-mtrl-famo}
COMMON="device=cpu train.progress=false train.torch_threads=1"
REACH="benchmark=mt1 benchmark.env_name=reach-v3 agent.hidden_sizes=[256,256] train.per_task_batch=64 \
train.total_steps=15000 train.warmup_steps=1500 eval.every=5000 eval.episodes=5 eval.final_episodes=20"
MT10="experiment=mt10_cpu train.total_steps=100000"

{
    for seed in 0 1; do
        echo "$REACH protocol=default seed=$seed run_dir=$RUNS/reach-default-s$seed"
        echo "$REACH protocol=metaworld_plus seed=$seed run_dir=$RUNS/reach-metaworld_plus-s$seed"
        echo "$MT10 protocol=default seed=$seed run_dir=$RUNS/mt10-default-s$seed"
        echo "$MT10 protocol=metaworld_plus seed=$seed run_dir=$RUNS/mt10-metaworld_plus-s$seed"
        echo "$MT10 protocol=metaworld_plus agent.multi_head=true seed=$seed run_dir=$RUNS/mt10-metaworld_plus_mh-s$seed"
    done
} | xargs -P "$JOBS" -I{} sh -c "$MTRL train $COMMON {} > /dev/null"
$MTRL report "$RUNS"/* --out "$OUT"
