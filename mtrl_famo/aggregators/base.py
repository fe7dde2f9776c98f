"""The base class shared by all aggregators, and the input checks they use.

An aggregator turns the per-task learning signal of one update into a single
update. It belongs to one of two families (see ``uses_task_gradients``):

- gradient aggregators take the ``[num_tasks, num_params]`` matrix ``G`` whose
  row ``i`` is task ``i``'s gradient and return one ``[num_params]`` direction
  (``combine``);
- loss-weighting aggregators take the ``[num_tasks]`` task losses and return a
  scalar whose gradient is the weighted task gradient (``combine_losses``).

Aggregators know nothing about reinforcement learning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class Aggregator:
    """Base class: holds ``num_tasks``, checks inputs, and provides no-op defaults.

    :param num_tasks: number of tasks ``k`` (rows of ``G``, entries of ``losses``).
    """

    #: True: the agent builds ``G`` ``[num_tasks, num_params]`` and calls ``combine(G)``.
    #: False: the agent calls ``combine_losses(losses)`` and backpropagates the scalar.
    uses_task_gradients: bool = False
    #: True where ``update(new_losses)`` does something (FAMO): only then need the
    #: caller recompute the losses after the optimizer step.
    needs_update: bool = False
    #: True: every call checks its inputs for NaN/inf (FAMO: also its losses against
    #: ``min_losses``) and raises at once. Each check reads a flag back from the
    #: device, a host sync per call; a training loop that watches its losses itself
    #: (:class:`~mtrl_famo.nonfinite.NonFiniteWatch`) sets it False so that the
    #: update queues on the GPU without waiting. Shape checks always run.
    immediate_checks: bool = True
    #: False where ``combine`` syncs with the host on CUDA (e.g. ``torch.linalg.eigh``): the
    #: compiled update (``train.compile=graph``) is then not replayed as a CUDA graph.
    cuda_graph_safe: bool = True

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = check_num_tasks(num_tasks)

    # -- the two entry points -------------------------------------------------
    def combine(self, G: Tensor) -> Tensor:
        """Combine per-task gradients ``G`` ``[num_tasks, num_params]`` into ``[num_params]``."""
        raise NotImplementedError(
            f"{type(self).__name__} weights losses, not gradients: call combine_losses(losses)"
        )

    def combine_losses(self, losses: Tensor) -> Tensor:
        """Combine task losses ``[num_tasks]`` into a scalar to backpropagate."""
        raise NotImplementedError(
            f"{type(self).__name__} combines per-task gradients: build G "
            f"[num_tasks, num_params] and call combine(G)"
        )

    # -- the functional entry point --------------------------------------------
    # The MT-SAC update (mtrl_famo.update) is one function, run eagerly, compiled as one graph
    # and vmapped over a population's members. It uses an aggregator through these methods:
    # ``state`` is a dict of tensors (this object's own, from functional_state(), or a
    # population's stacked copy under vmap), read and updated in place; random numbers come
    # in as ``draws`` (drawn before the update by draws()); nothing else of ``self`` changes.

    #: False where the functional form keeps state on the host (a call counter that decides
    #: what to compute, a solver's warm start): a population then runs each member's update
    #: on its own instead of one update vmapped over the members.
    vmappable: bool = True

    def functional_state(self) -> dict[str, Tensor]:
        """The tensors that the functional calls read and write in place: this object's own (default none)."""
        return {}

    def draws(self, device: torch.device) -> tuple[Tensor, ...]:
        """The random tensors of the next call, drawn now from this object's stream (default: none).

        A compiled or vmapped update cannot draw from a seeded generator inside itself.
        """
        return ()

    def combine_fn(self, state: dict[str, Tensor], G: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor | None]:
        """Gradient family: ``G`` ``[num_tasks, num_params]`` -> ``(direction [num_params], weights)``, the
        weights ``[num_tasks]`` to log (None where the method has none)."""
        raise NotImplementedError(f"{type(self).__name__} weights losses, not gradients: call loss_weights_fn")

    def loss_weights_fn(self, state: dict[str, Tensor], losses: Tensor, *draws: Tensor) -> Tensor:
        """Loss family: the detached ``losses`` ``[num_tasks]`` -> the weights ``lambda`` ``[num_tasks]`` of the
        combined gradient ``sum_i lambda_i grad L_i`` (what ``combine_losses``'s scalar differentiates to)."""
        raise NotImplementedError(f"{type(self).__name__} combines per-task gradients: call combine_fn")

    def update_fn(self, state: dict[str, Tensor], losses: Tensor, new_losses: Tensor) -> None:
        """Where ``needs_update``: learn from the step's effect, ``losses`` before and ``new_losses`` after it."""

    def task_weights_fn(self, state: dict[str, Tensor], weights: Tensor) -> Tensor | None:
        """Loss family: the ``[num_tasks]`` weights to log after the step, given this step's ``lambda``."""
        return weights

    def note_weights(self, weights: Tensor) -> None:
        """Keep the ``[num_tasks]`` weights of the last functional call, for ``task_weights`` and
        ``state_dict`` (where they are diagnostics the next call does not read; default: nothing)."""

    def graph_state(self) -> list[Tensor]:
        """The tensors that the update changes in place (``functional_state``'s values); a CUDA
        graph needs their addresses fixed (``train.compile=graph``)."""
        return list(self.functional_state().values())

    def update(self, new_losses: Tensor) -> None:
        """Adapt internal state after the optimizer step (no-op unless overridden).

        :param new_losses: ``[num_tasks]`` task losses recomputed after the step.
        """

    # -- diagnostics ------------------------------------------------------------
    @property
    def task_weights(self) -> Tensor | None:
        """``[num_tasks]`` current task weights, or None where the method has none."""
        return None

    @property
    def loss_weights(self) -> Tensor | None:
        """Loss-weighting aggregators: ``[num_tasks]``, the gradient of the last ``combine_losses``
        output with respect to its losses (the weight each task's gradient gets); None before it.

        A compiled update (``train.compile=graph``) takes the network's gradient as one
        vector-Jacobian product of the losses with these weights.
        """
        return None

    # -- checkpointing / devices ----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the internal state (independent of later updates)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot made by ``state_dict`` of an aggregator with the same options."""
        self._check_state_keys(state, set())

    def to(self, device: torch.device | str) -> "Aggregator":
        """Move internal tensors to ``device``; returns ``self``."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- checks used by subclasses --------------------------------------------
    def _check_matrix(self, G: Tensor, check_values: bool = True) -> Tensor:
        """Shape and dtype checks; ``check_values=False`` leaves the NaN/inf check to :func:`gram_matrix`."""
        expected = f"[num_tasks={self.num_tasks}, num_params]"
        if not isinstance(G, Tensor):
            raise ValueError(f"expected G to be a torch.Tensor of shape {expected}, got {type(G).__name__}")
        if G.ndim != 2 or G.shape[0] != self.num_tasks:
            raise ValueError(f"expected G of shape {expected}, got {tuple(G.shape)}")
        if not G.is_floating_point():
            raise ValueError(f"expected G to be a floating point tensor, got dtype {G.dtype}")
        if check_values and self.immediate_checks:
            check_finite(G, "G")
        return G

    def _check_losses(self, losses: Tensor | Sequence[Tensor], name: str = "losses") -> Tensor:
        if isinstance(losses, (list, tuple)):
            losses = torch.stack([torch.as_tensor(x) for x in losses])
        expected = f"[num_tasks={self.num_tasks}]"
        if not isinstance(losses, Tensor):
            raise ValueError(f"expected {name} to be a torch.Tensor of shape {expected}, got {type(losses).__name__}")
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"expected {name} of shape {expected}, got {tuple(losses.shape)}")
        if not losses.is_floating_point():
            raise ValueError(f"expected {name} to be a floating point tensor, got dtype {losses.dtype}")
        if self.immediate_checks:
            check_finite(losses, name)
        return losses

    def _check_non_negative(self, losses: Tensor, why: str) -> None:
        """With ``immediate_checks``, raise ValueError naming the tasks whose loss is negative."""
        if self.immediate_checks and not bool((losses >= 0).all()):
            bad = (losses < 0).nonzero().flatten().tolist()
            raise ValueError(f"{type(self).__name__} needs non-negative task losses ({why}); "
                             f"tasks {bad} have losses {[round(float(losses[i]), 6) for i in bad]}")

    def _check_state_keys(self, state: dict[str, Any], expected: set[str]) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"expected a state dict for {self!r}, got {type(state).__name__}")
        missing, unexpected = expected - state.keys(), state.keys() - expected
        if missing or unexpected:
            raise ValueError(
                f"state dict does not match {self!r}: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)}"
            )


class LastWeights:
    """Mixin: the ``[num_tasks]`` weights of the last call, kept for ``task_weights`` and ``state_dict``."""

    _weights: Tensor | None = None

    def note_weights(self, weights: Tensor) -> None:
        self._weights = weights

    @property
    def task_weights(self) -> Tensor | None:
        """``[num_tasks]``, the weights of the last call (None before the first)."""
        return None if self._weights is None else self._weights.clone()


def gram_matrix(G: Tensor, check: bool = True) -> Tensor:
    """``G G^T`` as float64 on ``G``'s device, checked for NaN/inf when ``check``.

    Computed in ``G``'s own dtype (a float64 copy of a ``[k, P]`` float32 matrix would
    cost more than the product), then cast: the ``[k, k]`` result is what the
    aggregators' small solvers work on, on the device, without reading anything back
    to the host. A row of ``G`` with NaN or inf makes its diagonal entry non-finite,
    so checking the diagonal checks all of ``G`` (the check is the one host sync;
    ``check=False`` skips it, for callers whose ``immediate_checks`` is off).

    :param G: ``[num_tasks, num_params]``. :returns: ``[num_tasks, num_tasks]`` float64.
    """
    gram = (G @ G.T).to(torch.float64)
    if check:
        check_finite(gram.diagonal(), "G")
    return gram


def check_finite(x: Tensor, name: str) -> None:
    """Raise FloatingPointError naming the task indices (rows) of ``x`` with NaN or inf.

    :param x: ``[num_tasks]`` or ``[num_tasks, ...]``.
    """
    finite = torch.isfinite(x)
    if finite.ndim > 1:
        finite = finite.flatten(1).all(dim=1)
    if not bool(finite.all()):  # one device sync
        bad = (~finite).nonzero().flatten().tolist()
        raise FloatingPointError(f"non-finite values (NaN or inf) in {name} at task indices {bad}")


def check_num_tasks(num_tasks: int) -> int:
    """Return ``num_tasks`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(num_tasks, bool):
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if not isinstance(num_tasks, int):
        try:
            num_tasks = int(num_tasks.__index__())  # numpy integers and the like
        except (AttributeError, TypeError):
            raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}") from None
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    return num_tasks


def check_float(name: str, value: float, *, min_value: float = -math.inf, strict: bool = False) -> float:
    """Return ``value`` as a finite float, or raise ValueError naming it.

    :param min_value: lower bound; ``value >= min_value`` (``>`` when ``strict``).
    """
    bound = f"> {min_value:g}" if strict else f">= {min_value:g}"
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(out) or out < min_value or (strict and out == min_value):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return out
