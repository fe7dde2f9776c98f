"""Does MT-SAC learn? Train single-task reach-v3 (benchmark=mt1) on CPU and print success per evaluation.

A correct SAC solves reach-v3 (success >= 0.9 over 20 evaluation episodes) within
100k steps. The check uses CleanRL-sized 2x256 networks so it takes ~30 min on one
CPU core (the default 3x400 costs ~4x more per update; pass
agent.hidden_sizes=[400,400,400] to check that too). Usage (extra arguments are
mtrl-famo overrides):

    python scripts/bench_reach.py [train.total_steps=100000] [seed=0] [run_dir=runs/bench-reach]
"""

from __future__ import annotations

import sys
import time

from mtrl_famo.runconfig import train_config
from mtrl_famo.train import Trainer

DEFAULTS = [
    "benchmark=mt1",
    "benchmark.env_name=reach-v3",
    "device=cpu",
    "agent.hidden_sizes=[256,256]",
    "train.total_steps=100000",
    "eval.every=5000",
    "eval.episodes=20",
    "eval.final_episodes=20",
    "train.progress=false",
    "run_dir=runs/bench-reach",
]


def main(overrides: list[str]) -> None:
    given = {o.split("=", 1)[0] for o in overrides}
    args = [d for d in DEFAULTS if d.split("=", 1)[0] not in given] + overrides
    cfg, resume = train_config(args)
    trainer = Trainer(cfg, out=lambda *_: None)
    start = time.perf_counter()
    trainer.run(resume=resume)
    minutes = (time.perf_counter() - start) / 60
    print(f"reach-v3, {cfg.aggregator.name}, seed {cfg.seed}: success over {cfg.eval.episodes} episodes")
    print("| step | success | return |")
    print("|-----:|--------:|-------:|")
    solved_at = None
    for result in trainer.evals:
        rate = result.success_rate["reach-v3"]
        print(f"| {result.step} | {rate:.2f} | {result.episodic_return['reach-v3']:.0f} |")
        if solved_at is None and rate >= 0.9:
            solved_at = result.step
    print(f"first evaluation with success >= 0.9: {'step ' + str(solved_at) if solved_at else 'never'}")
    print(f"wall time {minutes:.1f} min for {trainer.step} steps ({trainer.step / (minutes * 60):.0f} steps/s)")


if __name__ == "__main__":
    main(sys.argv[1:])
