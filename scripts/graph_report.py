"""Graph breaks, graphs, recompiles and time per update: eager ``MTSAC.update`` vs ``train.compile=graph``.

For each aggregator, side by side in one run on a random task-grouped batch:

- ``eager breaks``: the graph breaks ``torch._dynamo.explain`` finds in the eager update
  (optimizer objects, ``autograd.grad``, ``requires_grad_``: why it cannot be one graph);
- ``graphs``: the graphs ``train.compile=graph`` compiled over ``--updates`` updates, with
  and without diagnostics (2 expected: one each; any more is a recompile, counted in
  ``recompiles``); a graph break would be an error (``fullgraph=True``);
- ``compile s``: seconds of the first update of each kind (compilation);
- ``eager ms`` / ``graph ms``: median time of one update after warm-up, taking turns, and
  their ratio (on CUDA the graph update is replayed as a CUDA graph);
- ``CUDA graphs skipped``: inductor's count of graphs it could not make CUDA graphs of (the
  reason is in its log); 0 on a CPU.

    python scripts/graph_report.py [--device cpu|cuda] [--tasks 10] [--aggregators mean famo pcgrad cagrad]
                                   [--updates 20] [--hidden 400 400 400] [--backend inductor]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch._dynamo.utils import counters

from bench_aggregators import ACT_DIM, OBS_DIM, random_batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, CRITIC_ONLY_AGGREGATORS, GRAPH_AGGREGATORS, AgentConfig
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.sac import MTSAC


def make_agent(aggregator: str, k: int, hidden: list[int], device: torch.device, backend: str | None) -> MTSAC:
    """The eager agent (``backend`` None) or the ``train.compile=graph`` one compiled with ``backend``."""
    torch.manual_seed(0)
    apply_to = ["critic"] if aggregator in CRITIC_ONLY_AGGREGATORS else ["critic", "actor"]
    agent = MTSAC(OBS_DIM + k, ACT_DIM, k, AgentConfig(hidden_sizes=hidden), AGGREGATOR_SCHEMAS[aggregator](
        apply_to=apply_to), device, immediate_checks=False)
    if backend is not None:
        agent.graph_update = GraphUpdate(agent, backend=backend)
    return agent


def timed(agent: MTSAC, batch, device: torch.device, diagnostics: bool = False) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    agent.update(batch, diagnostics)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def report(aggregator: str, k: int, hidden: list[int], device: torch.device, updates: int, backend: str) -> str:
    batch = random_batch(k, 128, device)
    eager = make_agent(aggregator, k, hidden, device, None)
    explained = torch._dynamo.explain(eager.update)(batch)
    torch._dynamo.reset()
    counters.clear()
    graph = make_agent(aggregator, k, hidden, device, backend)
    compile_s = timed(graph, batch, device) + timed(graph, batch, device, diagnostics=True)
    eager_s, graph_s = [], []
    for i in range(updates):
        diagnostics = i % 5 == 4  # as a run that logs now and then
        eager_s.append(timed(eager, batch, device, diagnostics))
        graph_s.append(timed(graph, batch, device, diagnostics))
    graphs = counters["stats"]["unique_graphs"]
    cudagraph_skips = sum(counters["inductor"].get(key, 0) for key in counters["inductor"] if "cudagraph_skip" in key)
    eager_ms, graph_ms = statistics.median(eager_s) * 1e3, statistics.median(graph_s) * 1e3
    return (f"| {device.type} | {k} | {aggregator} | {explained.graph_break_count} | {graphs} | {max(0, graphs - 2)} | "
            f"{compile_s:.1f} | {eager_ms:.1f} | {graph_ms:.1f} | {eager_ms / graph_ms:.2f}x | {cudagraph_skips} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", type=int, nargs="+", default=[10])
    parser.add_argument("--aggregators", nargs="+", default=list(GRAPH_AGGREGATORS), choices=GRAPH_AGGREGATORS)
    parser.add_argument("--updates", type=int, default=20, help="timed updates of each path (every 5th with diagnostics)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400, 400], help="hidden layer widths")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: a quick check)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("| device | k | aggregator | eager breaks | graphs | recompiles | compile s | eager ms | graph ms | "
          "graph speed-up | CUDA graphs skipped |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in args.tasks:
        for aggregator in args.aggregators:
            print(report(aggregator, k, args.hidden, device, args.updates, args.backend), flush=True)


if __name__ == "__main__":
    main()
