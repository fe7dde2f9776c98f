"""``train.compile=graph`` for every network with a real backend: max differences from the eager update.

CI checks the compiled update against the eager one for every network with the cheap ``aot_eager``
backend (tests/test_graph_networks.py); this runs the same comparison with ``inductor`` (its code
generation takes 60-190 s per network on a CPU, too slow for CI). For each network, side by side: the
seconds of the first compiled update (compilation), then after ``--updates`` updates of both agents on
the same batches, the largest absolute difference of any metric and of any tensor the update changes
(networks, target, temperatures, Adam states, aggregator state), and the largest relative difference of
the parameters.

    python scripts/graph_networks.py [--backend inductor] [--tasks 3] [--updates 3] [--aggregator pcgrad]
                                     [--networks mlp moore ...] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils._pytree import keystr, tree_flatten_with_path

from bench_aggregators import random_batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, CRITIC_ONLY_AGGREGATORS, AgentConfig
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.sac import MTSAC

#: the networks at small sizes (compile time grows with the traced ops, not with widths)
SMALL = dict(hidden_sizes=[64, 64], encoder_width=16, embedding_dim=16, module_width=32, routing_width=32)
CASES = {"mlp": dict(network="mlp"), "mlp_multi_head": dict(network="mlp", multi_head=True),
         "film": dict(network="film"), "care": dict(network="care"), "moore": dict(network="moore"),
         "soft_modules": dict(network="soft_modules", task_loss_weights="temperature"), "paco": dict(network="paco")}


def make_agent(case: str, k: int, aggregator: str, device: torch.device, backend: str | None) -> MTSAC:
    torch.manual_seed(0)
    apply_to = ["critic"] if aggregator in CRITIC_ONLY_AGGREGATORS else ["critic", "actor"]
    agent = MTSAC(39 + k, 4, k, AgentConfig(init="reference", grad_clip=1.0, **SMALL, **CASES[case]),
                  AGGREGATOR_SCHEMAS[aggregator](apply_to=apply_to), device, immediate_checks=False)
    if backend is not None:
        agent.graph_update = GraphUpdate(agent, backend=backend)
    return agent


def tensors(agent: MTSAC) -> dict[str, torch.Tensor]:
    """Everything an update changes, by name: the floating-point leaves of the update's own state tree."""
    leaves, _ = tree_flatten_with_path(agent.update_state())
    return {keystr(path): value.detach() for path, value in leaves
            if isinstance(value, torch.Tensor) and value.is_floating_point()}


def max_abs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[key].detach().double() - b[key].detach().double()).abs().max()) for key in a)


def compare(case: str, args, device: torch.device) -> str:
    eager = make_agent(case, args.tasks, args.aggregator, device, None)
    graph = make_agent(case, args.tasks, args.aggregator, device, args.backend)
    metrics_diff, compile_s = 0.0, 0.0
    for i in range(args.updates):
        batch = random_batch(args.tasks, 16, device)
        start = time.perf_counter()
        metrics_graph = graph.update(batch)
        if i == 0:
            compile_s = time.perf_counter() - start
        metrics_diff = max(metrics_diff, max_abs(eager.update(batch), metrics_graph))
    e, g = tensors(eager), tensors(graph)
    params = [key for key in e if key.startswith(("['params']['actor']", "['params']['critic']"))]
    rel = max(float(((g[key] - e[key]).abs() / e[key].abs().clamp_min(1e-6)).max()) for key in params)
    return f"| {case} | {compile_s:.0f} | {metrics_diff:.1e} | {max_abs(e, g):.1e} | {rel:.1e} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="inductor")
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--aggregator", default="pcgrad")
    p.add_argument("--networks", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(f"backend={args.backend}, {args.tasks} tasks, {args.updates} updates, aggregator={args.aggregator}, "
          f"device={device}, torch {torch.__version__}")
    print("| network | compile s | max abs diff, metrics | max abs diff, tensors | max rel diff, parameters |")
    print("|---|---:|---:|---:|---:|")
    for case in args.networks:
        print(compare(case, args, device), flush=True)


if __name__ == "__main__":
    main()
