"""Per-update time of the full MT-SAC update (critic + actor + temperatures) for each aggregator.

Side by side in one run, at k=10 and k=50 tasks with the default networks (3x400) and
batch (128 rows per task), on CPU and on CUDA when present. Each aggregator is printed
with its ratio to ``mean`` (shared network); rows with ``agent.multi_head=true`` (one output
layer per task, Meta-World+ MTMHSAC) follow for every aggregator, then rows for each network of
``--networks`` (``agent.network``: FiLM, CARE, MOORE, Soft Modules, PaCo at the reference's
sizes, still against the shared MLP's ``mean``); PCGrad and CAGrad are also timed with the k-pass per-task
gradient paths, so the speed-up of the one-pass (vmap) path is visible:

- ``vmap``: one batched backward (the default);
- ``loop``: k backward passes, each over one task's rows (the tested reference);
- ``full-graph``: k backward passes through the whole batch's graph, as the published
  PCGrad/CAGrad code for MTRL does.

``--aggregators`` picks the rows (default: every registered aggregator, the zoo of issue 12
included; DWA is fed two windows of losses first, so that its row times the steady state,
not the warm-up).

Targets: famo <= 1.05x mean; pcgrad and cagrad <= 1.3x mean at k=10, <= 1.6x at k=50.

``--combine`` times one ``combine(G)`` instead, on the critic's ``[k, P]`` gradient
matrix, for PCGrad and CAGrad before (the host implementations in
``aggregators/reference.py``: the ``[k, k]`` Gram matrix read back, solved in NumPy)
and after (solved on the device, nothing read back), interleaved call by call:
``host ms`` is the time until the call returns (what the Python thread spends),
``device ms`` the time until its work has finished (they are equal on a CPU). On a
GPU a combine that reads nothing back returns before its work is done, so the host
can queue the rest of the update meanwhile.

    python scripts/bench_aggregators.py [--tasks 10 50] [--repeats 10] [--threads 1] [--full-graph-tasks 10]
    python scripts/bench_aggregators.py --combine [--tasks 10 50] [--repeats 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

from mtrl_famo.aggregators import AGGREGATORS, make_aggregator
from mtrl_famo.aggregators.per_task_grads import per_task_gradients, per_task_gradients_loop
from mtrl_famo.aggregators.reference import HostCAGrad, HostPCGrad
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, NETWORK_NAMES, AgentConfig
from mtrl_famo.networks import TwinQ
from mtrl_famo.sac import MTSAC

OBS_DIM, ACT_DIM = 39, 4
#: every registered aggregator, mean first (the ratios are to it), then the original four, then the zoo;
#: nashmtl only where its optional extra (CVXPY) is installed.
BENCHED = ["mean", "famo", "pcgrad", "cagrad"] + [
    name for name in AGGREGATORS if name not in ("mean", "famo", "pcgrad", "cagrad")
    and (name != "nashmtl" or importlib.util.find_spec("cvxpy") is not None)]


def per_task_gradients_full_graph(module, loss_fn, task_args, params=None, *, return_losses=False, has_aux=False):
    """The published pattern: one forward of the whole batch, then k ``autograd.grad`` calls."""
    named = {n: p for n, p in module.named_parameters() if p.requires_grad}
    losses, aux = loss_fn(named, *task_args) if has_aux else (loss_fn(named, *task_args), None)  # [k]
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], list(named.values()),
                                                                  retain_graph=True)])
            for i in range(losses.shape[0])]
    G = torch.stack(rows)
    return (G, None) + ((losses.detach(),) if return_losses else ()) + ((aux,) if has_aux else ())


PATHS = {"vmap": per_task_gradients, "loop": per_task_gradients_loop, "full-graph": per_task_gradients_full_graph}


def random_batch(k: int, per_task: int, device: torch.device) -> Batch:
    """A task-grouped batch whose observations carry the right one-hot."""
    one_hot = torch.eye(k, device=device)[:, None, :].expand(k, per_task, k)
    obs = torch.cat([torch.randn(k, per_task, OBS_DIM, device=device), one_hot], -1)
    next_obs = torch.cat([torch.randn(k, per_task, OBS_DIM, device=device), one_hot], -1)
    return Batch(obs, torch.rand(k, per_task, ACT_DIM, device=device) * 2 - 1,
                 torch.rand(k, per_task, device=device), next_obs, torch.zeros(k, per_task, device=device))


def agent_config(network: str) -> AgentConfig:
    """``shared`` and ``multi-head``: the default MLPs; any other ``agent.network`` at its reference sizes."""
    if network in ("shared", "multi-head"):
        return AgentConfig(multi_head=network == "multi-head")
    return AgentConfig(network=network, init="reference")


def time_updates(settings: list[tuple[str, str, str]], k: int, device: torch.device, repeats: int,
                 per_task: int) -> list[float]:
    """Median seconds of one ``MTSAC.update`` for each (aggregator, path, network) (:func:`agent_config`).

    The settings take turns, one update each per round, so that a change in machine
    load over the run affects them all alike and the ratios stay side by side.
    """
    batch = random_batch(k, per_task, device)
    agents = []
    for aggregator, path, network in settings:
        torch.manual_seed(0)
        agent = MTSAC(OBS_DIM + k, ACT_DIM, k, agent_config(network), AGGREGATOR_SCHEMAS[aggregator](),
                      device, task_gradients=PATHS[path])
        for agg in agent.aggregators.values():  # DWA: past its warm-up of 2 windows, to time its steady state
            for _ in range(2 * getattr(agg, "window", 0)):
                agg.combine_losses(torch.rand(k, device=device) + 0.1)
        agents.append(agent)
    times: list[list[float]] = [[] for _ in settings]
    for round_ in range(repeats + 2):  # two warm-up rounds
        for agent, samples in zip(agents, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            agent.update(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= 2:
                samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


def time_combines(k: int, device: torch.device, repeats: int) -> list[tuple[str, str, float, float]]:
    """Median (host, device) seconds of one ``combine(G)``, before and after, for PCGrad and CAGrad.

    ``G`` is ``[k, P]`` float32 with ``P`` the default critic's parameter count, random
    rows with a shared component (so that some pairs conflict and some do not).
    """
    num_params = sum(p.numel() for p in TwinQ(OBS_DIM + k, ACT_DIM, AgentConfig().hidden_sizes).parameters())
    gen = torch.Generator().manual_seed(0)
    G = (torch.randn(k, num_params, generator=gen) + 0.5 * torch.randn(1, num_params, generator=gen)).to(device)
    settings = [("pcgrad", "before (host)", HostPCGrad(k)), ("pcgrad", "after (device)", make_aggregator("pcgrad", k)),
                ("cagrad", "before (host)", HostCAGrad(k)), ("cagrad", "after (device)", make_aggregator("cagrad", k))]
    settings += [(name, "zoo", make_aggregator(name, k)) for name in BENCHED
                 if name not in ("pcgrad", "cagrad") and AGGREGATORS[name].uses_task_gradients]
    for _, _, agg in settings:
        agg.immediate_checks = False  # as in training: the loop's deferred NaN/inf watch
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    host: list[list[float]] = [[] for _ in settings]
    total: list[list[float]] = [[] for _ in settings]
    for round_ in range(repeats + 2):  # two warm-up rounds
        for (_, _, agg), h, t in zip(settings, host, total):
            sync()
            start = time.perf_counter()
            agg.combine(G)
            returned = time.perf_counter()
            sync()
            done = time.perf_counter()
            if round_ >= 2:
                h.append(returned - start)
                t.append(done - start)
    return [(name, impl, statistics.median(h), statistics.median(t))
            for (name, impl, _), h, t in zip(settings, host, total)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--per-task-batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--full-graph-tasks", type=int, nargs="*", default=[10],
                        help="k values at which to time the full-graph path too (it costs k backward passes "
                             "of the whole batch: about 100 s per update at k=50 on one CPU core)")
    parser.add_argument("--combine", action="store_true",
                        help="time one combine(G) of PCGrad and CAGrad, host solvers (before) vs device (after)")
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda when present")
    parser.add_argument("--aggregators", nargs="+", default=list(BENCHED), choices=sorted(AGGREGATORS),
                        help="which aggregators (mean first: the ratios are to the first one); default: all "
                             "(nashmtl only where CVXPY is installed)")
    parser.add_argument("--no-multi-head", action="store_true",
                        help="skip the rows with multi-head networks (agent.multi_head=true, Meta-World+ MTMHSAC)")
    parser.add_argument("--networks", nargs="*", default=list(NETWORK_NAMES[1:]), choices=NETWORK_NAMES[1:],
                        help="agent.network rows (default: all but mlp; none with an empty list)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ([torch.device(d) for d in args.device] if args.device else
               [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else []))
    if args.combine:
        print(f"torch {torch.__version__}, {args.threads} CPU thread(s), G = [k, critic parameters] float32, "
              f"median of {args.repeats} calls, settings interleaved\n")
        print("| device | k | aggregator | solver | host ms/combine | device ms/combine |")
        print("|---|---:|---|---|---:|---:|")
        for device in devices:
            for k in args.tasks:
                for name, impl, host_s, total_s in time_combines(k, device, args.repeats):
                    print(f"| {device.type} | {k} | {name} | {impl} | {host_s * 1e3:.2f} | {total_s * 1e3:.2f} |",
                          flush=True)
        return
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), 3x400 networks, "
          f"{args.per_task_batch} rows per task, median of {args.repeats} updates, settings interleaved\n")
    print("| device | k | network | aggregator | per-task grads | ms/update | x mean (shared) |")
    print("|---|---:|---|---|---|---:|---:|")
    for device in devices:
        for k in args.tasks:
            aggregators = tuple(args.aggregators)
            runs = [(agg, "vmap", "shared") for agg in aggregators]
            naive = ["loop"] + (["full-graph"] if k in args.full_graph_tasks else [])
            runs += [(agg, path, "shared") for agg in ("pcgrad", "cagrad") if agg in aggregators for path in naive]
            if not args.no_multi_head:  # Meta-World+ MTMHSAC: one output layer per task (agent.multi_head)
                runs += [(agg, "vmap", "multi-head") for agg in aggregators]
            runs += [(agg, "vmap", network) for network in args.networks for agg in aggregators]
            seconds = time_updates(runs, k, device, args.repeats, args.per_task_batch)
            for (aggregator, path, network), sec in zip(runs, seconds):
                shown_path = path if AGGREGATORS[aggregator].uses_task_gradients else "-"
                print(f"| {device.type} | {k} | {network} | {aggregator} | {shown_path} | {sec * 1e3:.1f} | "
                      f"{sec / seconds[0]:.2f} |", flush=True)

if __name__ == "__main__":
    main()
