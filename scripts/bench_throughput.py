"""Throughput of the whole training loop (collect + update): vector steps per second.

For MT10 and MT50, per aggregator, on CPU and on CUDA when present, with the default
networks (3x400) and batch (128 rows per task). Prints where the time goes (choosing
actions, gradient updates, waiting for the envs), the share of a vector step spent
waiting for the envs (``env wait``: with ``async`` envs they step while the update
runs, so this is the part of the envs' time the update did not hide), and the
projected wall time of a full run (2M steps per task = 2M vector steps, one update each).

    python scripts/bench_throughput.py [--benchmarks mt10 mt50] [--aggregators mean famo pcgrad cagrad]
                                       [--steps 30] [--strategy sync async] [--device cpu cuda] [--compile MODE ...]

``--compile task_gradients all`` also measures each setting with those ``train.compile``
modes, side by side with eager; each compiled run follows a short warm-up run, so
compilation is not timed.

On CUDA the update is queued, not waited for: ``update ms`` is the time to queue it, and
the GPU work still running shows up in ``act ms`` (the action copy waits for the
updated actor). Vector steps per second is the figure that counts.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from mtrl_famo.runconfig import compose_config
from mtrl_famo.train import Trainer

FULL_RUN_VECTOR_STEPS = 2_000_000


def measure(benchmark: str, aggregator: str, device: str, strategy: str, steps: int, extra: list[str],
            warm_up_compile: bool = True) -> dict:
    """Run ``steps`` learning vector steps (after a few random warm-up steps) and read the loop's timers."""
    compiled = any(x.startswith("train.compile=") and x != "train.compile=none" for x in extra)
    if compiled and warm_up_compile:
        # Fresh graphs for this setting (earlier settings' shapes would count toward the
        # recompile limit), compiled in a throw-away run whose cache the timed run uses.
        torch._dynamo.reset()
        measure(benchmark, aggregator, device, strategy, 2, extra, warm_up_compile=False)
    k = {"mt10": 10, "mt50": 50}[benchmark]
    warmup = 5
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config([
            f"benchmark={benchmark}", f"aggregator={aggregator}", f"device={device}",
            f"benchmark.vector_strategy={strategy}", f"train.total_steps={(warmup + steps) * k}",
            f"train.warmup_steps={warmup * k}", "train.buffer_size=100000", "train.progress=false",
            "train.log_every=100000000", "eval.every=100000000", "eval.final_episodes=1", f"run_dir={run_dir}",
            *extra,
        ])
        trainer = Trainer(cfg, out=lambda *_: None)
        trainer.run()
    t = trainer.timing
    per_step = {"act": t["act"] / (warmup + steps), "env": t["env"] / (warmup + steps),
                "update": t["update"] / steps}  # updates run in the learning steps only
    return {"steps_per_s": 1.0 / sum(per_step.values()), **{name: 1e3 * v for name, v in per_step.items()}}

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", nargs="+", default=["mt10", "mt50"])
    parser.add_argument("--aggregators", nargs="+", default=["mean", "famo", "pcgrad", "cagrad"])
    parser.add_argument("--steps", type=int, default=30, help="learning vector steps measured per setting")
    parser.add_argument("--strategy", nargs="+", default=["sync"], choices=["sync", "async"],
                        help="vector env strategies, measured side by side")
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--compile", nargs="*", default=[], choices=["task_gradients", "all"],
                        help="also measure with these train.compile modes")
    parser.add_argument("overrides", nargs="*", help="extra mtrl-famo overrides, e.g. train.torch_threads=2")
    args = parser.parse_args()
    print(f"torch {torch.__version__}; 3x400 networks, 128 rows per task; "
          f"{args.steps} learning vector steps per row (after 5 random warm-up steps); "
          f"ms per vector step\n")
    print("| device | benchmark | aggregator | envs | compile | vector steps/s | act ms | update ms | env ms "
          "| env wait | full run (2M/task) |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for device in args.device:
        for benchmark in args.benchmarks:
            for aggregator in args.aggregators:
                for strategy in args.strategy:
                    for mode in ["none", *args.compile]:
                        extra = [*args.overrides, f"train.compile={mode}"]
                        r = measure(benchmark, aggregator, device, strategy, args.steps, extra)
                        hours = FULL_RUN_VECTOR_STEPS / r["steps_per_s"] / 3600
                        wait = r["env"] / (r["act"] + r["update"] + r["env"])
                        print(f"| {device} | {benchmark} | {aggregator} | {strategy} | {mode} | "
                              f"{r['steps_per_s']:.1f} | {r['act']:.1f} | {r['update']:.1f} | {r['env']:.1f} | "
                              f"{wait:.0%} | {hours:,.1f} h |", flush=True)


if __name__ == "__main__":
    main()
