"""Random loss weighting: fresh random task weights at every update."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Aggregator, LastWeights
from .seeded import CallSeeded


class RLW(CallSeeded, LastWeights, Aggregator):
    """Random loss weighting (Lin, Ye, Xu, Shi and Zhang 2022, "Reasonable Effectiveness of
    Random Weighting: A Litmus Test for Multi-Task Learning", TMLR).

    Each ``combine_losses(losses)`` draws ``eps ~ N(0, I)`` ``[num_tasks]`` (the paper's
    default distribution), sets ``w = softmax(eps)`` (on the simplex: the weights sum
    to 1, as in the paper and LibMTL's ``RLW``) and returns ``sum_i w_i L_i``. The weights
    are constants: no gradient flows into them. The losses may have any sign (a convex
    combination), so RLW may also weight the SAC actor loss.

    Random stream (as :class:`~mtrl_famo.aggregators.pcgrad.PCGrad`'s orders): call ``n``
    (counted on the host, so counting costs no sync) seeds a generator on the losses'
    device with ``splitmix64(seed, n)`` and draws ``eps`` there; nothing is read back to
    the host. The weights are a deterministic function of ``(seed, n, device type)``, and
    the state is the seed and the call count, so a resumed run continues the same stream.

    :param num_tasks: number of tasks ``k``.
    :param seed: seed of the weights' random stream.
    """

    uses_task_gradients = False
    needs_update = False

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        Aggregator.__init__(self, num_tasks)
        CallSeeded.__init__(self, seed)
        self._weights: Tensor | None = None  # of the last combine_losses, [num_tasks]

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]`` task losses.

        :returns: scalar ``sum_i w_i losses_i`` with ``w = softmax(eps)``, ``eps ~ N(0, I)``, drawn now.
        """
        losses = self._check_losses(losses)
        weights = self.draw(losses.device).to(losses.dtype)
        self._weights = weights
        return (weights * losses).sum()

    def draws(self, device: torch.device) -> tuple[Tensor]:
        """``(weights,)``: the next call's ``softmax(eps)`` ``[num_tasks]`` (advances the call count)."""
        return (self.draw(device),)

    def loss_weights_fn(self, state: dict, losses: Tensor, *draws: Tensor) -> Tensor:
        """The drawn weights ``[num_tasks]`` (:meth:`draws`)."""
        (weights,) = draws
        return weights.to(self._check_losses(losses).dtype)

    def draw(self, device: torch.device | str = "cpu") -> Tensor:
        """The next weights of the stream, ``softmax(eps)`` ``[num_tasks]`` float32 on ``device``
        (advances the call count)."""
        eps = torch.randn(self.num_tasks, generator=self.next_generator(device), device=device)
        return torch.softmax(eps, dim=0)

    def state_dict(self) -> dict[str, Any]:
        """``{"seed": int, "calls": int, "weights": last weights or None}``."""
        return {"seed": self.seed, "calls": self.calls, "weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"seed", "calls", "weights"})
        self.seed, self.calls = int(state["seed"]), int(state["calls"])
        self._weights = None if state["weights"] is None else state["weights"].clone()

    def to(self, device: torch.device | str) -> "RLW":
        """Move the last weights to ``device`` (the stream itself follows the losses' device)."""
        if self._weights is not None:
            self._weights = self._weights.to(device)
        return self

    def __repr__(self) -> str:
        return f"RLW(seed={self.seed})"
