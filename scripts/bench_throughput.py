"""Throughput of the whole training loop (collect + update): vector steps per second.

For MT10 and MT50, per aggregator, on CPU and on CUDA when present, with the default
networks (3x400) and batch (128 rows per task). Prints where the time goes (choosing
actions, gradient updates, waiting for the envs), the share of a vector step spent
waiting for the envs (``env wait``: with ``async`` envs they step while the update
runs, so this is the part of the envs' time the update did not hide), and the
projected wall time of a full run (2M steps per task = 2M vector steps, one update each).

    python scripts/bench_throughput.py [--benchmarks mt10 mt50] [--aggregators mean famo pcgrad cagrad]
                                       [--steps 30] [--strategy sync async] [--device cpu cuda] [--compile MODE ...]
                                       [--backend metaworld envpool] [--env-threads 1 2]

``--population N`` measures, per setting, a population of N seeds in one process
(``seeds=[0..N-1]``: one stacked update for all members) against N single runs one
after another, and prints both in member environment steps per second: the
population's gain is the ratio. On a CPU the update is compute-bound and the members'
envs step one after another either way, so expect about 1x there.

With ``--compile graph`` the population is also measured with its vmapped update compiled as
one graph (the N-seeds-in-one-graph figure that matters on a GPU).

``--compile task_gradients all`` also measures each setting with those ``train.compile``
modes, side by side with eager; a compiled run's first update (its compilation) is left
out of its update time.

``--backend metaworld envpool`` measures each setting on both training backends (``benchmark.backend``),
EnvPool with each of ``--env-threads`` (``benchmark.env_threads``; 0: all cores but one), side by side; a
first table then gives the training envs' own speed (random actions, no learner): environment steps per
second over all tasks, and per core the envs may use (Meta-World sync: 1; async: one process per task,
up to the machine's cores; EnvPool: its threads).

On CUDA the update is queued, not waited for: ``update ms`` is the time to queue it, and
the GPU work still running shows up in ``act ms`` (the action copy waits for the
updated actor). Vector steps per second is the figure that counts.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from mtrl_famo.runconfig import compose_config, compose_node
from mtrl_famo.train import Trainer

FULL_RUN_VECTOR_STEPS = 2_000_000


def env_settings(args) -> list[tuple[str, list[str]]]:
    """``(label, overrides)`` of every training-env setting measured: Meta-World's strategies, EnvPool's threads."""
    settings = []
    for backend in args.backend:
        if backend == "metaworld":
            settings += [(s, [f"benchmark.vector_strategy={s}"]) for s in args.strategy]
        else:
            settings += [(f"envpool {t or 'auto'}t", ["benchmark.backend=envpool", f"benchmark.env_threads={t}"])
                         for t in args.env_threads]
    return settings


def cores_used(label: str, num_tasks: int) -> int:
    """Cores the training envs of a setting may use at once."""
    from mtrl_famo.envpool_envs import resolve_env_threads

    cores = len(os.sched_getaffinity(0))
    if label == "sync":
        return 1
    if label == "async":
        return min(num_tasks, cores)
    threads = label.split()[1][:-1]
    return min(num_tasks, resolve_env_threads(0 if threads == "auto" else int(threads)))


def measure_envs(benchmark: str, overrides: list[str], vector_steps: int) -> float:
    """Environment steps per second (over all tasks) of the training envs alone, random actions."""
    from mtrl_famo.envs import make_training_envs

    cfg = compose_config([f"benchmark={benchmark}", *overrides])
    envs = make_training_envs(cfg.benchmark, 0)
    try:
        envs.reset(seed=0)
        actions = [envs.action_space.sample() for _ in range(vector_steps + 5)]
        for a in actions[:5]:  # warm caches and threads
            envs.step(a)
        clock = time.perf_counter()
        for a in actions[5:]:
            envs.step(a)
        return vector_steps * envs.num_envs / (time.perf_counter() - clock)
    finally:
        envs.close()


def compare_envs(args) -> None:
    """The training envs' own speed, every setting side by side."""
    print(f"training envs alone: {args.env_steps} vector steps of random actions per row; "
          f"{len(os.sched_getaffinity(0))} cores\n")
    print("| benchmark | envs | env steps/s | cores | env steps/s per core |")
    print("|---|---|---:|---:|---:|")
    for benchmark in args.benchmarks:
        k = {"mt10": 10, "mt50": 50}[benchmark]
        for label, overrides in env_settings(args):
            rate, cores = measure_envs(benchmark, overrides, args.env_steps), cores_used(label, k)
            print(f"| {benchmark} | {label} | {rate:,.0f} | {cores} | {rate / cores:,.0f} |", flush=True)
    print()


def run_overrides(benchmark: str, aggregator: str, device: str, strategy: list[str] | str, steps: int, run_dir: str,
                  extra: list[str]) -> list[str]:
    k = {"mt10": 10, "mt50": 50}[benchmark]
    envs = [f"benchmark.vector_strategy={strategy}"] if isinstance(strategy, str) else strategy
    return [f"benchmark={benchmark}", f"aggregator={aggregator}", f"device={device}",
            *envs, f"train.total_steps={(WARMUP + steps) * k}",
            f"train.warmup_steps={WARMUP * k}", "train.buffer_size=100000", "train.progress=false",
            "train.log_every=100000000", "eval.every=100000000", "eval.final_episodes=1", f"run_dir={run_dir}",
            *extra]


def per_step(timing: dict, steps: int, update_steps: int | None = None) -> dict:
    """ms per vector step of ``act``/``env``/``update`` and the vector steps per second they add up to;
    ``update_steps``: how many updates ``timing["update"]`` holds (default ``steps``)."""
    per = {"act": timing["act"] / (WARMUP + steps), "env": timing["env"] / (WARMUP + steps),
           "update": timing["update"] / (update_steps or steps)}  # updates run in the learning steps only
    return {"steps_per_s": 1.0 / sum(per.values()), **{name: 1e3 * v for name, v in per.items()}}


def timed_run(trainer, steps: int, compiled: bool) -> dict:
    """Run ``trainer``; for a compiled update, its first update (the compilation: every agent and
    population compiles a code object of its own) is left out of the update time."""
    first: list[float] = []
    if compiled:
        update = trainer.agent.update

        def first_timed(*args, **kwargs):
            if first:
                return update(*args, **kwargs)
            clock = time.perf_counter()
            out = update(*args, **kwargs)
            first.append(time.perf_counter() - clock)
            return out

        trainer.agent.update = first_timed
    trainer.run()
    timing = dict(trainer.timing)
    if first:
        timing["update"] -= first[0]
    return per_step(timing, steps, steps - len(first))


def measure_population(benchmark: str, aggregator: str, device: str, strategy: str, steps: int, extra: list[str],
                       size: int) -> dict:
    """A population of ``size`` seeds: its loop's timers, per vector step of all members together."""
    from mtrl_famo.population import PopulationTrainer, population_configs

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [*run_overrides(benchmark, aggregator, device, strategy, steps, run_dir, extra),
                     f"seeds=[{','.join(map(str, range(size)))}]"]
        compose_config(overrides)  # checks the input
        configs, _ = population_configs(overrides, compose_node(overrides))
        return timed_run(PopulationTrainer(configs, out=lambda *_: None), steps, "train.compile=graph" in extra)


WARMUP = 5


def measure(benchmark: str, aggregator: str, device: str, strategy: list[str] | str, steps: int,
            extra: list[str]) -> dict:
    """Run ``steps`` learning vector steps (after a few random warm-up steps) and read the loop's timers."""
    compiled = any(x.startswith("train.compile=") and x != "train.compile=none" for x in extra)
    torch._dynamo.reset()  # fresh graphs: earlier settings' would count toward the recompile limit
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(run_overrides(benchmark, aggregator, device, strategy, steps, run_dir, extra))
        return timed_run(Trainer(cfg, out=lambda *_: None), steps, compiled)


def compare_population(args) -> None:
    """``--population N``: a population of N seeds against N single runs, side by side."""
    n = args.population
    print(f"torch {torch.__version__}; {args.strategy[0]} envs; "
          f"{args.steps} learning vector steps per run (after {WARMUP} random warm-up steps); a population of {n} "
          f"seeds in one process vs {n} single runs one after another (seeds 0..{n - 1}); ms per vector step of "
          f"ALL {n} members; member steps/s = {n} x vector steps/s\n")
    print("| device | benchmark | aggregator | how | member vector steps/s | act ms | update ms | env ms | gain |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for device in args.device:
        for benchmark in args.benchmarks:
            for aggregator in args.aggregators:
                extra = [*args.overrides, "train.compile=none"]
                singles = [measure(benchmark, aggregator, device, args.strategy[0], args.steps,
                                   [*extra, f"seed={seed}"]) for seed in range(n)]
                single = {key: sum(r[key] for r in singles) for key in ("act", "update", "env")}
                single_rate = 1e3 / sum(single.values()) * n
                rows = [(f"{n} single runs", single_rate, single, "")]
                # a population's update is eager or one graph (train.compile=graph); the other modes are refused
                for mode in ["none", *(m for m in args.compile if m == "graph")]:
                    pop = measure_population(benchmark, aggregator, device, args.strategy[0], args.steps,
                                             [*args.overrides, f"train.compile={mode}"], n)
                    pop_rate = pop["steps_per_s"] * n
                    how = f"population of {n}" + (", one graph" if mode == "graph" else "")
                    rows.append((how, pop_rate, pop, f"{pop_rate / single_rate:.2f}x"))
                for how, rate, r, gain in rows:
                    print(f"| {device} | {benchmark} | {aggregator} | {how} | {rate:.1f} | {r['act']:.1f} | "
                          f"{r['update']:.1f} | {r['env']:.1f} | {gain} |", flush=True)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", nargs="+", default=["mt10", "mt50"])
    parser.add_argument("--aggregators", nargs="+", default=["mean", "famo", "pcgrad", "cagrad"])
    parser.add_argument("--steps", type=int, default=30, help="learning vector steps measured per setting")
    parser.add_argument("--strategy", nargs="+", default=["sync"], choices=["sync", "async"],
                        help="vector env strategies, measured side by side")
    parser.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--compile", nargs="*", default=[], choices=["task_gradients", "all", "graph"],
                        help="also measure with these train.compile modes")
    parser.add_argument("--population", type=int, default=0, metavar="N",
                        help="compare a population of N seeds with N single runs instead")
    parser.add_argument("--backend", nargs="+", default=["metaworld"], choices=["metaworld", "envpool"],
                        help="training env backends (benchmark.backend), measured side by side")
    parser.add_argument("--env-threads", nargs="+", type=int, default=[0],
                        help="benchmark.env_threads of the envpool rows (0: all cores but one)")
    parser.add_argument("--env-steps", type=int, default=200, help="vector steps of the envs-alone table (0: no such table)")
    parser.add_argument("overrides", nargs="*", help="extra mtrl-famo overrides, e.g. train.torch_threads=2")
    args = parser.parse_args()
    if args.population:
        compare_population(args)
        return
    if "envpool" in args.backend and args.env_steps:
        compare_envs(args)
    print(f"torch {torch.__version__}; {' '.join(args.overrides) or '3x400 networks, 128 rows per task'}; "
          f"{args.steps} learning vector steps per row (after 5 random warm-up steps); "
          f"ms per vector step\n")
    print("| device | benchmark | aggregator | envs | compile | vector steps/s | act ms | update ms | env ms "
          "| env wait | full run (2M/task) |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for device in args.device:
        for benchmark in args.benchmarks:
            for aggregator in args.aggregators:
                for strategy, env_overrides in env_settings(args):
                    for mode in ["none", *args.compile]:
                        extra = [*args.overrides, f"train.compile={mode}"]
                        r = measure(benchmark, aggregator, device, env_overrides, args.steps, extra)
                        hours = FULL_RUN_VECTOR_STEPS / r["steps_per_s"] / 3600
                        wait = r["env"] / (r["act"] + r["update"] + r["env"])
                        print(f"| {device} | {benchmark} | {aggregator} | {strategy} | {mode} | "
                              f"{r['steps_per_s']:.1f} | {r['act']:.1f} | {r['update']:.1f} | {r['env']:.1f} | "
                              f"{wait:.0%} | {hours:,.1f} h |", flush=True)


if __name__ == "__main__":
    main()
