"""MT-SAC for a population: the one update (:func:`mtrl_famo.update.update`) vmapped over ``N`` members.

Every member of a population (:mod:`mtrl_famo.population`) is an ordinary
:class:`~mtrl_famo.sac.MTSAC` (networks, target, optimizers, temperatures, aggregators,
random stream), built exactly as its single run builds it. Here the members' update states
are stacked along a leading member dimension ``N`` and the update runs as
``torch.func.vmap(update)`` over it (``train.compile=graph``: that vmapped update compiled
as one graph). Each member draws its noise and its aggregator's draws from its own
streams, in its single run's order, so member ``i`` computes what the single run with seed
``i`` computes, to float tolerance (batched matmuls round differently from single ones).

Aggregators whose functional form keeps state on the host (``vmappable`` False: DWA's
window count, the host solvers of MGDA, UPGrad, DualProj, FairGrad and Nash-MTL) cannot be
vmapped: the update then runs member by member on views of the stacked tensors, with each
member's own aggregator.

While training, the stacked tensors are the truth; :meth:`StackedMTSAC.write_back` copies
them into the member objects (for evaluation, videos and checkpoints) and
:meth:`StackedMTSAC.load_from_members` reads them back (at the start, after a resume).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_leaves, tree_map

from mtrl_famo.aggregators.per_task_grads import per_task_gradients
from mtrl_famo.buffer import Batch
from mtrl_famo.graph_update import compile_update
from mtrl_famo.networks import squashed_sample
from mtrl_famo.sac import MTSAC, sample_noise
from mtrl_famo.update import make_draws, update


def vmapped_update(spec, state: dict, batch: Batch, draws, diagnostics: bool) -> dict[str, Tensor]:
    """:func:`~mtrl_famo.update.update` over a leading member dimension of ``state``, ``batch`` and
    ``draws``; the metrics, each with a leading ``N``."""
    return vmap(lambda s, b, d: update(spec, s, b, d, diagnostics)[1])(state, batch, draws)


class StackedMTSAC:
    """``N`` :class:`MTSAC` members of one configuration, updated as one.

    :param members: the members, built with the same configuration (their own seeds).
    :param compile: compile the vmapped update as one graph (``train.compile=graph``).
    :param backend: ``torch.compile``'s backend (tests use ``aot_eager``).
    """

    def __init__(self, members: list[MTSAC], compile: bool = False, backend: str = "inductor"):
        if not members:
            raise ValueError("a population needs at least one member")
        first = members[0]
        self.members = list(members)
        self.num_members = len(members)
        self.num_tasks, self.act_dim, self.cfg, self.device = first.num_tasks, first.act_dim, first.cfg, first.device
        for member in members:  # a check reads a flag back to the host; the loop watches the metrics instead
            for aggregator in member.aggregators.values():
                aggregator.immediate_checks = False
        #: one update vmapped over the members, or (host-side aggregator state) one per member
        self.vmapped = all(a.vmappable for a in first.aggregators.values())
        # The member-0 modules serve as the templates of functional_call; the one-pass gradients
        # run inside the vmap (a separately compiled task_gradients cannot be traced into).
        self.specs = [dataclasses.replace(m.spec, task_gradients=per_task_gradients) for m in members]
        self.state = tree_map(lambda *ts: torch.stack([t.detach() for t in ts]),
                              *[self._member_state(m) for m in members])  # every tensor [N, ...]
        if compile and not self.vmapped:
            raise ValueError("a population compiles its update only with aggregators that vmap")
        self._update = compile_update(vmapped_update, backend) if compile else vmapped_update

    def _member_state(self, member: MTSAC) -> dict:
        """What is stacked of a member's update state: all of it, or without the aggregators' (member by member)."""
        state = member.update_state()
        return state if self.vmapped else {"params": state["params"], "adam": state["adam"]}

    # ------------------------------------------------------------------ members <-> stacked
    @torch.no_grad()
    def load_from_members(self) -> None:
        """Stack the members' parameters, optimizer states and aggregator states (into the same tensors)."""
        member_leaves = [tree_leaves(self._member_state(m)) for m in self.members]
        for j, stacked in enumerate(tree_leaves(self.state)):
            stacked.copy_(torch.stack([leaves[j] for leaves in member_leaves]))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked state into the members (before they evaluate, film or save)."""
        stacked = tree_leaves(self.state)
        for i, member in enumerate(self.members):
            for target, source in zip(tree_leaves(self._member_state(member)), stacked):
                target.copy_(source[i])

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Sampled actions of every member: ``obs`` ``[N, n, obs_dim]`` -> ``[N, n, act_dim]`` (numpy).

        Member ``i``'s noise comes from its own generator, as in :meth:`MTSAC.act`.
        """
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        noise = torch.stack([sample_noise((*obs_t.shape[1:-1], self.act_dim), m.generator, self.device)
                             for m in self.members])
        actor = self.members[0].actor

        def one(params: dict, o: Tensor, n: Tensor) -> Tensor:
            return squashed_sample(*functional_call(actor, params, (o,)), n)[0]

        return vmap(one)(self.state["params"]["actor"], obs_t, noise).cpu().numpy()

    def sample(self, buffers: list, per_task_batch: int) -> Batch:
        """One replay batch per member (each from its buffer, drawn with its generator), stacked:
        every field ``[N, num_tasks, per_task_batch, ...]``."""
        batches = [buffer.sample(per_task_batch, m.generator) for buffer, m in zip(buffers, self.members)]
        return Batch(*(torch.stack(field) for field in zip(*batches)))

    # ------------------------------------------------------------------ the update
    def update(self, batch: Batch, diagnostics: bool = False) -> dict[str, Tensor]:
        """One MT-SAC update of every member (what :meth:`MTSAC.update` does, member by member).

        :param batch: every field ``[N, num_tasks, per_task_batch, ...]``.
        :param diagnostics: also compute each member's per-task gradient statistics.
        :return: metrics as :meth:`MTSAC.update` returns them with a leading member
            dimension: ``[N, num_tasks]`` for the per-task vectors, ``[N]`` for scalars.
        """
        _, k, b, _ = batch.actions.shape
        draws = [make_draws(spec, (k, b, self.act_dim), m.generator, self.device)
                 for spec, m in zip(self.specs, self.members)]
        if self.vmapped:
            stacked_draws = tree_map(lambda *ts: torch.stack(ts), *draws)
            metrics = self._update(self.specs[0], self.state, batch, stacked_draws, bool(diagnostics))
            for i, member in enumerate(self.members):
                member.note_weights({key: value[i] for key, value in metrics.items()})
            return metrics
        per_member = []
        for i, (spec, member) in enumerate(zip(self.specs, self.members)):
            state = {**tree_map(lambda t: t[i], self.state),  # views: the update writes into the stacked tensors
                     "aggregators": {name: agg.functional_state() for name, agg in member.aggregators.items()}}
            per_member.append(update(spec, state, Batch(*(field[i] for field in batch)), draws[i], diagnostics)[1])
            member.note_weights(per_member[-1])
        return {key: torch.stack([m[key] for m in per_member]) for key in per_member[0]}
