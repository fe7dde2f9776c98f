"""The eager MT-SAC update of two source trees, timed side by side (e.g. before and after a change).

Each round runs the same timing in a fresh process per tree, alternating, so both see the same
machine load; the table gives each tree's median ms per update over the rounds and their ratio.
The trees only need ``mtrl_famo`` importable from their root (``git worktree add ../old HEAD~1``;
a worktree needs ``ln -s ../configs mtrl_famo/configs`` when the package is installed from another one).

    python scripts/bench_versions.py --old ../old [--new .] [--tasks 10] [--rounds 5] [--aggregators mean famo ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

TIMING = r"""
import json, statistics, sys, time
import torch
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
from mtrl_famo.sac import MTSAC
torch.set_num_threads(1)
k, b, updates, names = int(sys.argv[1]), 128, int(sys.argv[2]), sys.argv[3:]
gen = torch.Generator().manual_seed(0)
obs = lambda: torch.cat([torch.rand(k, b, 39, generator=gen), torch.eye(k)[:, None].expand(k, b, k)], -1)
batch = Batch(obs(), torch.rand(k, b, 4, generator=gen) * 2 - 1, torch.rand(k, b, generator=gen), obs(),
              torch.zeros(k, b))
out = {}
for name in names:
    torch.manual_seed(0)
    agent = MTSAC(39 + k, 4, k, AgentConfig(), AGGREGATOR_SCHEMAS[name](), immediate_checks=False)
    agent.update(batch)
    times = []
    for _ in range(updates):
        clock = time.perf_counter()
        agent.update(batch)
        times.append(time.perf_counter() - clock)
    out[name] = 1e3 * statistics.median(times)
print(json.dumps(out))
"""


def time_tree(tree: Path, tasks: int, updates: int, aggregators: list[str]) -> dict[str, float]:
    """ms per update of each aggregator with ``tree``'s ``mtrl_famo``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    proc = subprocess.run([sys.executable, "-c", TIMING, str(tasks), str(updates), *aggregators], env=env,
                          capture_output=True, text=True, cwd=tree)
    if proc.returncode != 0:
        raise SystemExit(f"bench_versions: the timing failed in {tree}: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the source tree to compare against")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=5, help="timed updates per process (median)")
    parser.add_argument("--aggregators", nargs="+", default=["mean", "famo", "pcgrad", "cagrad"])
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        for which in ("old", "new"):
            runs[which].append(time_tree(getattr(args, which), args.tasks, args.updates, args.aggregators))
    print(f"eager MT-SAC update, k={args.tasks}, 3x400 networks, 128 rows per task, 1 thread; median over "
          f"{args.rounds} alternating rounds of {args.updates} updates\nold: {args.old}\nnew: {args.new}\n")
    print("| aggregator | old ms/update | new ms/update | new / old |")
    print("|---|---:|---:|---:|")
    for name in args.aggregators:
        old, new = (statistics.median(r[name] for r in runs[which]) for which in ("old", "new"))
        print(f"| {name} | {old:.1f} | {new:.1f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
