"""``train.compile=graph``: the one MT-SAC update (:func:`mtrl_famo.update.update`) as one compiled graph.

The update is written with functional pieces only (``torch.func`` gradients, Adam on the
optimizers' own state tensors, aggregators through their functional entry points, random
numbers drawn before it), so ``torch.compile(fullgraph=True)`` captures it whole, and on
CUDA replays it as a CUDA graph (``mode="reduce-overhead"``). It writes into the agent's
own tensors, so checkpoints are those of the eager update and a run may switch between
the two on resume; the two agree to float rounding (``tests/test_graph_update.py``).

Shapes are static (``dynamic=False``): one graph with diagnostics and one without, each
compiled once, at the first update that needs it. A population compiles the vmapped
update the same way (:mod:`~mtrl_famo.stacked_sac`), through :func:`compile_update`.
"""

from __future__ import annotations

import itertools
import types
import warnings
from typing import Callable

import torch
from torch import Tensor

from mtrl_famo.buffer import Batch
from mtrl_famo.update import make_draws, update

_INSTANCES = itertools.count()


def compile_update(function: Callable, backend: str = "inductor", cuda_graphs: bool = False) -> Callable:
    """``torch.compile(fullgraph=True, dynamic=False)`` of a copy of ``function`` with a code object of its own.

    torch.compile caches compiled code per code object, up to 8 entries (``recompile_limit``),
    and every agent's update would be another entry of the one ``update``: a process that
    builds many agents (tests, benchmarks) would hit the limit. Each copy holds its own graphs.
    """
    # torch's own compiler code warns about its internal deprecations, once per compile, on the user's terminal.
    warnings.filterwarnings("ignore", message=".*torch._prims_common.check.*", category=FutureWarning)
    code = function.__code__.replace(co_name=f"{function.__code__.co_name}_{next(_INSTANCES)}")
    copy = types.FunctionType(code, function.__globals__, argdefs=function.__defaults__,
                              closure=function.__closure__)
    mode = "reduce-overhead" if cuda_graphs and backend == "inductor" else None
    return torch.compile(copy, fullgraph=True, dynamic=False, backend=backend, mode=mode)


class GraphUpdate:
    """``agent.update(batch, diagnostics)`` as one ``torch.compile`` graph per ``diagnostics`` value.

    :param agent: the :class:`~mtrl_famo.sac.MTSAC` whose tensors the update reads and writes in
        place; its aggregators must have a compiled form (``config.GRAPH_AGGREGATORS``), and their
        immediate checks are switched off (a check reads a flag back from the device; the training
        loop's :class:`~mtrl_famo.nonfinite.NonFiniteWatch` watches the metrics instead).
    :param backend: ``torch.compile``'s backend (tests use ``aot_eager``, which compiles faster).
    """

    def __init__(self, agent, backend: str = "inductor"):
        self.agent = agent
        for aggregator in agent.aggregators.values():
            aggregator.immediate_checks = False
        # CUDA graphs need an update with no host sync at all (not so for eigh-based aggregators).
        self.cuda_graphs = agent.device.type == "cuda" and all(a.cuda_graph_safe for a in agent.aggregators.values())
        self._compiled = compile_update(update, backend, self.cuda_graphs)

    def __call__(self, batch: Batch, diagnostics: bool = False) -> dict[str, Tensor]:
        """One update; same arguments and metrics as :meth:`MTSAC.update`."""
        agent = self.agent
        k, b = batch.rewards.shape
        draws = make_draws(agent.spec, (k, b, agent.act_dim), agent.generator, agent.device)
        state = agent.update_state()
        if self.cuda_graphs:  # what the graph updates in place keeps its address between replays
            for tensor in _tensors(state):
                torch._dynamo.mark_static_address(tensor)
        _, metrics = self._compiled(agent.spec, state, batch, draws, bool(diagnostics))
        if self.cuda_graphs:  # a CUDA graph's outputs are overwritten by its next replay
            metrics = {key: value.clone() for key, value in metrics.items()}
        agent.note_weights(metrics)
        return metrics


def _tensors(tree) -> list[Tensor]:
    """Every tensor of a nested dict/list tree."""
    return [leaf for leaf in torch.utils._pytree.tree_leaves(tree) if isinstance(leaf, Tensor)]
