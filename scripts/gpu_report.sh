#!/usr/bin/env bash
# One command that measures a GPU machine and writes docs/results/gpu/<device-name>.md:
#   1. the CUDA tests (pytest -k cuda),
#   2. bench_aggregators (per-update time, and per-combine host/device time) at k=10 and k=50,
#   3. graph_report (train.compile=graph: graph breaks, graphs, recompiles, eager vs one graph),
#   4. bench_throughput (async envs, eager and the one-graph update, MT10 and MT50; EnvPool's training
#      envs on all cores, MT10 and MT50; a population of 4 seeds as one vmapped update, eager and as one
#      graph, against 4 single runs),
#   5. profile_update on CUDA (k=10),
#   6. a timed MT10 training run of a few minutes and its projected full-run (2M steps/task) time.
# Each step has its own time limit; the whole report stays under 9.5 minutes. A step that fails
# or runs out of time is reported as such and the report goes on.
#
#   bash scripts/gpu_report.sh                 # on a GPU machine
#   bash scripts/gpu_report.sh --dry-run [--out FILE]
#                                              # every step on the CPU at toy sizes (seconds, not minutes),
#                                              # to check the script itself; figures meaningless
# Without a CUDA device (and without --dry-run) it says so and exits 0.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

DRY_RUN=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "gpu_report.sh: unknown argument '$1'; allowed: --dry-run, --out FILE" >&2; exit 2 ;;
  esac
  shift
done

if [ "$DRY_RUN" = 0 ] && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_report.sh: no CUDA device here: nothing measured, no report written."
  echo "  (bash scripts/gpu_report.sh --dry-run runs every step on the CPU at toy sizes to check the script.)"
  exit 0
fi

if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  NAME="dry-run-cpu"
  TINY=(agent.hidden_sizes=[32,32] train.per_task_batch=8 benchmark.max_episode_steps=50)
else
  DEVICE=cuda
  NAME="$(python -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")"
  TINY=()
fi
OUT="${OUT:-docs/results/gpu/$NAME.md}"
mkdir -p "$(dirname "$OUT")"
START=$(date +%s)

# section TITLE LIMIT_SECONDS COMMAND...: run it, tee its output into the report as a block.
section() {
  local title="$1" limit="$2"; shift 2
  echo "== $title (limit ${limit}s): $*"
  local t0=$(date +%s) log rc
  log="$(mktemp)"
  timeout "$limit" "$@" >"$log" 2>&1
  rc=$?
  local t1=$(date +%s)
  {
    echo "## $title"
    echo
    echo "\`$*\` — exit $rc$([ $rc = 124 ] && echo ' (ran out of time)'), $((t1 - t0)) s"
    echo
    echo '```'
    tail -n 60 "$log"
    echo '```'
    echo
  } >>"$OUT"
  tail -n 5 "$log"
  rm -f "$log"
}

{
  echo "# GPU report: $NAME"
  echo
  [ "$DRY_RUN" = 1 ] && echo "**Dry run on the CPU at toy sizes: checks the script, the figures mean nothing.**" && echo
  echo "Written by \`bash scripts/gpu_report.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run')\` on $(date -u +%Y-%m-%dT%H:%MZ)," \
       "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  echo '```'
  python -c "import torch, platform; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| python', platform.python_version()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  echo "CPU cores: $(nproc)"
  echo '```'
  echo
} >"$OUT"

if [ "$DRY_RUN" = 1 ]; then
  section "CUDA tests" 120 python -m pytest -q -x tests/test_fast_path.py tests/test_buffer.py -k cuda
  section "Update time per aggregator" 120 python scripts/bench_aggregators.py --device cpu --tasks 2 --repeats 1 --full-graph-tasks --aggregators mean famo pcgrad cagrad --no-multi-head
  section "Combine: host solvers (before) vs device (after)" 60 python scripts/bench_aggregators.py --combine --device cpu --tasks 2 --repeats 1
  section "Throughput (async envs)" 240 python scripts/bench_throughput.py "${TINY[@]}" --device cpu --benchmarks mt10 --aggregators mean --strategy async --steps 1 --backend metaworld envpool --env-threads 0 --env-steps 2
  section "Profile of one update" 120 python scripts/profile_update.py --device cpu --tasks 2 --aggregators mean --updates 1
  section "One-graph update (train.compile=graph)" 180 python scripts/graph_report.py --device cpu --tasks 2 --aggregators mean --updates 2 --hidden 32 32 --backend aot_eager
  RUN_STEPS=200; RUN_WARMUP=100; RUN_LIMIT=240
else
  section "CUDA tests" 45 python -m pytest -q tests -k cuda
  section "Update time per aggregator" 45 python scripts/bench_aggregators.py --device cuda --tasks 10 50 --repeats 10 --full-graph-tasks --aggregators mean famo pcgrad cagrad
  section "Combine: host solvers (before) vs device (after)" 30 python scripts/bench_aggregators.py --combine --device cuda --tasks 10 50 --repeats 30
  section "One-graph update (train.compile=graph, CUDA graphs)" 90 python scripts/graph_report.py --device cuda --tasks 10 --aggregators mean pcgrad --updates 30
  section "Throughput, MT10 (async envs, eager and compiled)" 75 python scripts/bench_throughput.py --device cuda --benchmarks mt10 --aggregators mean pcgrad --strategy async --steps 30 --compile graph
  section "Throughput, MT50 (async envs, eager and compiled)" 45 python scripts/bench_throughput.py --device cuda --benchmarks mt50 --aggregators mean --strategy async --steps 20 --compile graph
  section "EnvPool training envs on all $(nproc) cores (MT10, MT50)" 60 python scripts/bench_throughput.py --device cuda --benchmarks mt10 mt50 --aggregators mean --backend envpool --env-threads "$(nproc)" --steps 20 --env-steps 100
  section "Population of seeds (one vmapped update)" 90 python scripts/bench_throughput.py --device cuda --benchmarks mt10 --aggregators mean --steps 20 --population 4 --compile graph
  section "Profile of one update (CUDA, k=10)" 20 python scripts/profile_update.py --device cuda --tasks 10 --updates 10
  RUN_STEPS=150000; RUN_WARMUP=20000; RUN_LIMIT=60  # 60 (was 120): room for the EnvPool section, same total
fi

# A timed MT10 run: environment steps over all tasks (10 per vector step); its projected
# full-run time is (wall time / vector steps done) x 2M vector steps, startup and the final
# one-episode evaluation included (so an upper bound). Stopped at its time limit if need be;
# the steps done then come from its progress log.
RUN_DIR="$(mktemp -d)"
echo "== Timed MT10 run (limit ${RUN_LIMIT}s)"
t0=$(date +%s.%N)
timeout "$RUN_LIMIT" python -m mtrl_famo.cli train benchmark=mt10 aggregator=mean device="$DEVICE" \
  benchmark.vector_strategy=async train.total_steps="$RUN_STEPS" train.warmup_steps="$RUN_WARMUP" \
  eval.every=100000000 eval.final_episodes=1 train.log_every=10000 train.progress=false \
  run_dir="$RUN_DIR/run" "${TINY[@]}" >"$RUN_DIR/log" 2>&1
rc=$?
t1=$(date +%s.%N)
python - "$RUN_DIR/run" "$rc" "$t0" "$t1" "$RUN_STEPS" >>"$OUT" <<'EOF'
import glob, sys
from pathlib import Path
run, rc, t0, t1, planned = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
steps = planned if rc == 0 else 0
if rc != 0:  # read the last step TensorBoard saw
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(Path(run) / "tb")); acc.Reload()
        steps = max((e.step for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)), default=0)
    except Exception:
        steps = 0
wall = t1 - t0
print("## Timed MT10 run (mean, async envs, eager)\n")
print(f"exit {rc}{' (stopped at its time limit)' if rc == 124 else ''}; {steps:,} environment steps "
      f"({steps // 10:,} vector steps) in {wall:.0f} s")
if steps:
    hours = wall / (steps / 10) * 2_000_000 / 3600
    print(f"\nprojected full MT10 run (2M steps per task = 2M vector steps): **{hours:,.1f} h** "
          "(startup and warm-up included: an upper bound)")
print()
EOF
tail -n 3 "$OUT"
rm -rf "$RUN_DIR"

echo "report written to $OUT in $(( $(date +%s) - START )) s"
exit 0
