#!/usr/bin/env bash
# The CPU-scale MT10 comparison: {mean, famo, pcgrad, cagrad} x seeds with the
# experiment=mt10_cpu preset, as a local parallel sweep, then `mtrl-famo report`.
# Extra arguments are passed to the sweep as overrides (e.g. train.total_steps=200000).
# Starting it again with the same SWEEP folder resumes unfinished runs and skips finished ones.
#
#   JOBS=2 SEEDS=0,1 scripts/run_mt10_study.sh [overrides...]
set -euo pipefail
SWEEP=${SWEEP:-sweeps/mt10_cpu_study}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0,1}
OUT=${OUT:-docs/results/mt10_cpu}

mtrl-famo train --multirun hydra/launcher=local "hydra.launcher.n_jobs=$JOBS" "hydra.sweep.dir=$SWEEP" \
    experiment=mt10_cpu aggregator=mean,famo,pcgrad,cagrad "seed=$SEEDS" device=cpu "$@"
mtrl-famo report "$SWEEP" --out "$OUT"
