"""Aggregators of a population: the members' aggregators as one, over a leading member dimension.

A population (many seeds of one configuration in one process, see
:mod:`mtrl_famo.population`) trains ``N`` members at once. Each member keeps its own
aggregator object (the contract of ``base.Aggregator``, its ``state_dict`` in the
member's checkpoint); :func:`stack_aggregators` wraps the ``N`` of them into one object
whose entry points take every member's input at once and return every member's
result (batched for mean and FAMO; member by member for the others, see
:class:`StackedPerMember`):

- ``combine(G)``: ``G`` ``[N, num_tasks, num_params]`` -> ``[N, num_params]``;
- ``combine_losses(losses)``: ``[N, num_tasks]`` -> ``[N]`` (sum it and backpropagate:
  members share no parameters, so member ``i``'s gradient is that of its own scalar);
- ``update(new_losses)``: ``[N, num_tasks]`` (FAMO);
- ``task_weights``: ``[N, num_tasks]`` or None.

The maths is that of the single aggregators, member by member (the tests compare
them). The stacked state is the source of truth while training; ``write_to_members``
copies it back into the member objects (before a checkpoint) and
``load_from_members`` reads it from them (at the start, after a resume).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtrl_famo.optim import fused_adam

from .alignedmtl import AlignedMTL
from .base import Aggregator
from .cagrad import CAGrad
from .dwa import DWA
from .dualproj import DualProj
from .fairgrad import FairGrad
from .famo import FAMO
from .imtlg import IMTLG
from .mean import Mean
from .mgda import MGDA
from .nashmtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .uw import UW
from .upgrad import UPGrad


class StackedAggregator:
    """``N`` members' aggregators of one kind as one; see the module docs for the shapes.

    :param members: the members' aggregators, all of the same class and options.
    """

    def __init__(self, members: list[Aggregator]):
        if not members:
            raise ValueError("a population needs at least one member aggregator")
        # A seeded aggregator's seed is the member's own (`seed: ${seed}`); the rest must agree.
        kinds = {repr(m) if not isinstance(m, _SEEDED) else type(m).__name__ for m in members}
        if len(kinds) != 1 or len({type(m) for m in members}) != 1:
            raise ValueError(f"the members' aggregators differ: {sorted(kinds)}; a population shares one configuration")
        self.members = list(members)
        self.num_members = len(members)
        self.num_tasks = members[0].num_tasks
        self.uses_task_gradients = members[0].uses_task_gradients
        self.needs_update = members[0].needs_update

    def combine(self, G: Tensor) -> Tensor:
        raise NotImplementedError(f"{self!r} weights losses: call combine_losses(losses [N, num_tasks])")

    def combine_losses(self, losses: Tensor) -> Tensor:
        raise NotImplementedError(f"{self!r} combines per-task gradients: call combine(G [N, num_tasks, P])")

    def update(self, new_losses: Tensor) -> None:
        """FAMO's step on its logits; a no-op for the others (see :class:`StackedPerMember`)."""

    @property
    def task_weights(self) -> Tensor | None:
        return None

    def load_from_members(self) -> None:
        """Read the members' state into the stacked state (stateless aggregators: nothing)."""

    def write_to_members(self) -> None:
        """Copy the stacked state back into the member objects (stateless aggregators: nothing)."""

    def _check_matrix(self, G: Tensor) -> Tensor:
        expected = f"[num_members={self.num_members}, num_tasks={self.num_tasks}, num_params]"
        if G.ndim != 3 or G.shape[:2] != (self.num_members, self.num_tasks):
            raise ValueError(f"expected G of shape {expected}, got {tuple(G.shape)}")
        return G

    def _check_losses(self, losses: Tensor) -> Tensor:
        if losses.shape != (self.num_members, self.num_tasks):
            raise ValueError(f"expected losses of shape [num_members={self.num_members}, "
                             f"num_tasks={self.num_tasks}], got {tuple(losses.shape)}")
        return losses

    def __repr__(self) -> str:
        return f"Stacked({self.members[0]!r} x {self.num_members})"


class StackedMean(StackedAggregator):
    """:class:`~mtrl_famo.aggregators.mean.Mean` for ``N`` members."""

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[N, num_tasks, num_params]``. :returns: ``[N, num_params]``."""
        return self._check_matrix(G).mean(dim=1)

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[N, num_tasks]``. :returns: ``[N]``."""
        return self._check_losses(losses).mean(dim=-1)

    @property
    def task_weights(self) -> Tensor:
        return torch.full((self.num_members, self.num_tasks), 1.0 / self.num_tasks)


class StackedFAMO(StackedAggregator):
    """:class:`~mtrl_famo.aggregators.famo.FAMO` for ``N`` members: logits ``[N, num_tasks]``, one Adam.

    Adam is elementwise, so one Adam over the stacked logits is ``N`` Adams over each
    member's logits (same step count: the members step together).
    """

    def __init__(self, members: list[FAMO]):
        super().__init__(members)
        m = members[0]
        self.w_lr, self.gamma, self.eps = m.w_lr, m.gamma, m.eps
        self.min_losses = m.min_losses  # [num_tasks]
        device = m.logits.device
        self.logits = torch.zeros((self.num_members, self.num_tasks), device=device, requires_grad=True)
        self._optimizer = fused_adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self._prev_losses: Tensor | None = None  # [N, num_tasks]
        self._loss_weights: Tensor | None = None  # [N, num_tasks]
        self.load_from_members()

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[N, num_tasks]``. :returns: ``[N]``, member ``i``'s FAMO scalar."""
        losses = self._check_losses(losses)
        l = losses - self.min_losses.to(losses.device) + self.eps
        l_detached = l.detach()
        weights = self.task_weights.to(losses.device) / l_detached
        weights = weights / weights.sum(dim=-1, keepdim=True)
        self._prev_losses = l_detached.clone()
        self._loss_weights = weights
        return (weights * l).sum(dim=-1)

    def update(self, new_losses: Tensor) -> None:
        """One Adam step on every member's logits. :param new_losses: ``[N, num_tasks]``."""
        if self._prev_losses is None:
            raise RuntimeError("StackedFAMO.update needs a preceding combine_losses")
        l_new = self._check_losses(new_losses).detach() - self.min_losses.to(new_losses.device) + self.eps
        delta = self._prev_losses.log() - l_new.log()  # [N, num_tasks]
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.softmax(self.logits, dim=-1), self.logits, grad_outputs=delta)
        self.logits.grad = grad
        self._optimizer.step()
        self._prev_losses = None

    @property
    def task_weights(self) -> Tensor:
        """``[N, num_tasks]``, each member's ``softmax(xi)``."""
        return torch.softmax(self.logits.detach(), dim=-1)

    def load_from_members(self) -> None:
        states = [m.state_dict() for m in self.members]
        with torch.no_grad():
            self.logits.copy_(torch.stack([s["logits"] for s in states]))
        adam = [s["optimizer"]["state"].get(0) for s in states]
        self._optimizer.state.clear()
        if adam[0] is not None:
            self._optimizer.state[self.logits] = {
                "step": adam[0]["step"].to(self.logits.device, torch.float32).clone(),
                "exp_avg": torch.stack([a["exp_avg"] for a in adam]).to(self.logits.device),
                "exp_avg_sq": torch.stack([a["exp_avg_sq"] for a in adam]).to(self.logits.device),
            }
        weights = [s["loss_weights"] for s in states]
        self._loss_weights = None if weights[0] is None else torch.stack(weights).to(self.logits.device)
        self._prev_losses = None

    def write_to_members(self) -> None:
        adam = self._optimizer.state.get(self.logits)
        for i, member in enumerate(self.members):
            state = member.state_dict()
            state["logits"] = self.logits.detach()[i].clone()
            if adam is not None:
                state["optimizer"]["state"] = {0: {"step": adam["step"].clone(), "exp_avg": adam["exp_avg"][i].clone(),
                                                   "exp_avg_sq": adam["exp_avg_sq"][i].clone()}}
            state["prev_losses"] = None
            state["loss_weights"] = None if self._loss_weights is None else self._loss_weights[i].clone()
            member.load_state_dict(state)


class StackedPCGrad(StackedAggregator):
    """:class:`~mtrl_famo.aggregators.pcgrad.PCGrad` for ``N`` members: each member's own
    ``combine`` on its ``[k, P]`` slice (its seed and call count draw its orders on ``G``'s
    device; nothing is read back), so a member computes exactly what a single run does.
    The ``[N, k, P]`` per-task gradients themselves come from one batched pass.
    """

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[N, num_tasks, num_params]``. :returns: ``[N, num_params]``."""
        G = self._check_matrix(G)
        return torch.stack([member.combine(g) for member, g in zip(self.members, G)])


class StackedCAGrad(StackedAggregator):
    """:class:`~mtrl_famo.aggregators.cagrad.CAGrad` for ``N`` members: each member's own
    ``combine`` (its fixed-iteration device solver; nothing read back), so a member computes
    exactly what a single run does. Batching the ``N`` small solves is left for a GPU profile.
    """

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[N, num_tasks, num_params]``. :returns: ``[N, num_params]``."""
        G = self._check_matrix(G)
        return torch.stack([member.combine(g) for member, g in zip(self.members, G)])

    @property
    def task_weights(self) -> Tensor | None:
        """``[N, num_tasks]``, each member's last ``w*`` (None before the first ``combine``); the
        members hold it, so there is no stacked state to load or write back."""
        weights = [member.task_weights for member in self.members]
        return None if weights[0] is None else torch.stack(weights)


class StackedPerMember(StackedAggregator):
    """Any aggregator for ``N`` members, member by member: member ``i``'s own ``combine`` on
    its ``[k, P]`` slice, or its own ``combine_losses`` (and ``update``) on its row of the
    ``[N, num_tasks]`` losses. Each member computes exactly what a single run does (Nash-MTL's
    schedule and warm start, RLW's stream included) and keeps its state, so there is nothing
    stacked to load or write back. Used for the zoo of issue 12 (UW, DWA, RLW: ``O(num_tasks)``
    work per call; MGDA, IMTL-G, Aligned-MTL, UPGrad, DualProj, FairGrad, Nash-MTL: small
    ``[k, k]`` solves); batching them is left for a profile that asks for it.
    """

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[N, num_tasks, num_params]``. :returns: ``[N, num_params]``."""
        if not self.uses_task_gradients:
            return super().combine(G)
        G = self._check_matrix(G)
        return torch.stack([member.combine(g) for member, g in zip(self.members, G)])

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[N, num_tasks]``. :returns: ``[N]``, member ``i``'s scalar."""
        if self.uses_task_gradients:
            return super().combine_losses(losses)
        losses = self._check_losses(losses)
        return torch.stack([member.combine_losses(row) for member, row in zip(self.members, losses)])

    def update(self, new_losses: Tensor) -> None:
        """Each member's ``update`` on its row. :param new_losses: ``[N, num_tasks]``."""
        new_losses = self._check_losses(new_losses)
        for member, row in zip(self.members, new_losses):
            member.update(row)

    @property
    def task_weights(self) -> Tensor | None:
        """``[N, num_tasks]``, each member's ``task_weights`` (None while a member has none)."""
        weights = [member.task_weights for member in self.members]
        return None if any(w is None for w in weights) else torch.stack([w.to(weights[0].device) for w in weights])


_SEEDED = (PCGrad, RLW)
_STACKED = {Mean: StackedMean, FAMO: StackedFAMO, PCGrad: StackedPCGrad, CAGrad: StackedCAGrad,
            **{cls: StackedPerMember for cls in (UW, DWA, RLW, MGDA, IMTLG, AlignedMTL, UPGrad, DualProj, FairGrad,
                                                 NashMTL)}}


def stack_aggregators(members: list[Aggregator]) -> StackedAggregator:
    """The stacked form of ``N`` members' aggregators (all of one class and options).

    :raises ValueError: for an aggregator class without a stacked form, or members that differ.
    """
    cls = type(members[0]) if members else None
    if cls not in _STACKED:
        raise ValueError(f"aggregator {cls.__name__ if cls else None} has no population (stacked) form; "
                         f"allowed: {', '.join(sorted(c.__name__ for c in _STACKED))}")
    stacked = _STACKED[cls](members)
    stacked.load_from_members()
    return stacked
