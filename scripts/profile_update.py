"""Where the time of one MT-SAC update goes: torch.profiler, grouped by kind of operation.

For each aggregator (with its default settings, e.g. the losses it applies to): ms
per update, the shares of matrix multiplies, of element-wise work, reductions and
copies, and of the optimizers (fused Adam, target update), and how many
operations per update do work (not views; on a GPU each is a kernel launch, so
with these small networks their number, not the FLOPs, sets the update's time). Default networks (3x400) and batch (128 rows per task).

    python scripts/profile_update.py [--tasks 10] [--aggregators mean famo pcgrad cagrad]
                                     [--device cpu|cuda] [--updates 10] [--top 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from mtrl_famo.config import AgentConfig
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC

from bench_aggregators import ACT_DIM, OBS_DIM, random_batch  # scripts/ is on sys.path when run as a script

MATMUL = {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::addmv", "aten::baddbmm"}
OPTIMIZER = {"aten::_fused_adam_", "aten::_foreach_lerp_"}  # MTSAC's Adam and target update


class WorkingOps(TorchDispatchMode):
    """Counts the operations that compute something (not views): on a GPU, each is a kernel launch."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if isinstance(func, torch._ops.OpOverload) and not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


def group_of(name: str) -> str:
    if name in MATMUL:
        return "matmul"
    if name in OPTIMIZER:
        return "optimizer + target"
    return "element-wise, reductions, copies"


def profile_aggregator(aggregator: str, k: int, device: torch.device, updates: int, top: int) -> None:
    aggregator_cfg = compose_config([f"aggregator={aggregator}"]).aggregator  # e.g. FAMO on the critic only
    agent = MTSAC(OBS_DIM + k, ACT_DIM, k, AgentConfig(), aggregator_cfg, device, immediate_checks=False)
    batch = random_batch(k, 128, device)
    for _ in range(3):  # optimizer state, allocator and CUDA warm-up
        agent.update(batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    clock = time.perf_counter()
    for _ in range(updates):
        agent.update(batch)
    sync()
    wall_ms = 1e3 * (time.perf_counter() - clock) / updates

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(updates):
            agent.update(batch)
        sync()
    with WorkingOps() as working_ops:
        agent.update(batch)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    on_gpu = device.type == "cuda"
    own_us = (lambda e: e.self_device_time_total) if on_gpu else (lambda e: e.self_cpu_time_total)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + own_us(e) / 1e3 / updates
    total = sum(groups.values())
    shares = ", ".join(f"{name} {100 * ms / total:.1f}%" for name, ms in sorted(groups.items(), key=lambda x: -x[1]))
    print(f"| {aggregator} | {wall_ms:.1f} | {total:.1f} | {working_ops.count} | {shares} |",
          flush=True)
    if top:
        sort_key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort_key, row_limit=top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10, help="number of tasks k (10 = MT10, 50 = MT50)")
    parser.add_argument("--aggregators", nargs="+", default=["mean", "famo", "pcgrad", "cagrad"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=10, help="updates timed and profiled per aggregator")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--top", type=int, default=0, help="also print the N most expensive operations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    time_of = "GPU kernel time" if device.type == "cuda" else "CPU time in operators"
    print(f"torch {torch.__version__} on {device}, {args.threads} CPU thread(s); k={args.tasks} tasks, batch "
          f"{128 * args.tasks} (128 per task), 3x400 networks; "
          f"{args.updates} updates per row\n")
    print(f"| aggregator | ms per update (wall) | ms in operators ({time_of}) "
          f"| computing ops per update | share of the operator time |")
    print("|---|---:|---:|---:|---|")
    for aggregator in args.aggregators:
        profile_aggregator(aggregator, args.tasks, device, args.updates, args.top)


if __name__ == "__main__":
    main()
