#!/usr/bin/env bash
# A first CPU look at MT10 across networks (issue 24): the shared MLP, the multi-head MLP, FiLM, CARE,
# MOORE, Soft Modules and PaCo, each a population of 2 seeds (seeds=[0,1], one process), JOBS at a time,
# then one report. Every network runs the same shrunk protocol=metaworld_plus budget (total steps,
# warm-up, batch, torso widths, evaluation); each network keeps the reference's MT10 options (experts,
# modules, parameter sets). The per-method settings of the reference's examples (experiment=moore_mt10,
# ...) are NOT applied: this compares networks under one setup. Names as arguments run only those
# populations, without the report (e.g. two lanes by hand). A population whose run_dir holds a
# checkpoint resumes from it. What ran and what it means: docs/results/architectures_cpu/README.md.
#
#   RUNS=/work/runs-arch/study OUT=docs/results/architectures_cpu JOBS=2 scripts/run_architecture_study.sh [NAME...]
set -euo pipefail
RUNS=${RUNS:-runs/architecture_study}
OUT=${OUT:-docs/results/architectures_cpu}
JOBS=${JOBS:-1}
TOTAL=${TOTAL:-20000}
WARMUP=${WARMUP:-5000}
EVERY=${EVERY:-15000}
export MTRL=${MTRL:-mtrl-famo} RUNS
export COMMON="protocol=metaworld_plus benchmark=mt10 device=cpu train.progress=false train.torch_threads=1 \
seeds=[0,1] agent.hidden_sizes=[256,256] train.per_task_batch=32 train.buffer_size=300000 \
train.total_steps=$TOTAL train.warmup_steps=$WARMUP eval.every=$EVERY eval.episodes=3 eval.final_episodes=5 \
train.log_every=5000"
# one line per population: its name (run_dir and log under $RUNS), then its overrides; slowest first
POPULATIONS="paco agent.network=paco
soft_modules agent.network=soft_modules
moore agent.network=moore
film agent.network=film
care agent.network=care
mlp agent.network=mlp
mlp_multi_head agent.network=mlp agent.multi_head=true"
if [ $# -gt 0 ]; then
    POPULATIONS=$(for name in "$@"; do echo "$POPULATIONS" | grep "^$name " || { echo "no population $name" >&2; exit 2; }; done)
fi
mkdir -p "$RUNS"
echo "$POPULATIONS" | xargs -P "$JOBS" -L 1 sh -c '$MTRL train $COMMON "$@" "run_dir=$RUNS/$0" >> "$RUNS/$0.log" 2>&1'
[ $# -gt 0 ] && exit 0
$MTRL report "$RUNS"/*/ --out "$OUT"
# beside the success rates (mostly 0 at this budget): each population's mean final return over tasks, per seed
python - "$RUNS" > "$OUT/returns.md" <<'PY'
import json, sys
from pathlib import Path
print("| population | network | mean return, seed 0 / seed 1 | mean success, seed 0 / seed 1 |\n|---|---|---|---|")
for run in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    res = [json.loads((run / s / "results.json").read_text()) for s in ("s0", "s1")]
    ret = " / ".join(f"{sum(r['episodic_return'].values()) / len(r['episodic_return']):.0f}" for r in res)
    print(f"| {run.name} | {res[0]['network']} | {ret} | {' / '.join(format(r['mean_success_rate'], '.2f') for r in res)} |")
PY
