"""Dynamic weight average: weight each task by how slowly its loss has been falling."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Aggregator, check_float


class DWA(Aggregator):
    """Dynamic weight average (Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning
    with Attention", Eq. 7), with a moving window of updates in place of epochs.

    The paper weights task ``i`` in epoch ``t`` by

        ``w_i = num_tasks * softmax(r / T)_i``,  ``r_i = L_i(t-1) / L_i(t-2)``,

    where ``L_i(t)`` is task ``i``'s loss averaged over epoch ``t`` and ``T`` the
    temperature (2 in the paper), with ``w_i = 1`` for the first two epochs; the
    weights sum to ``num_tasks`` and the scalar is ``sum_i w_i L_i``. Reinforcement
    learning has no epochs, so here ``L_i(t-1)`` is the mean of task ``i``'s losses over
    the last ``window`` calls and ``L_i(t-2)`` the mean over the ``window`` calls before
    those, both sliding by one call each update (the weights change every update, not
    once per block). Until ``2 * window`` calls have been seen, the weights are all 1.
    The current call's losses enter the history after its weights are computed, so
    call ``n`` is weighted by calls ``n - 2 window .. n - 1``.

    The weights are constants (computed from detached losses), as in the paper: no
    gradient flows into them. A window mean of 0 (impossible for a regression loss in
    practice) is clamped to the smallest positive float rather than divided by.
    The losses must be non-negative, since a ratio of means of losses of either sign
    says nothing about progress (hence not on the SAC actor loss).

    State: the last ``2 * window`` loss vectors ``[2 * window, num_tasks]`` on the
    losses' device, and the call count (on the host, so counting costs no sync);
    nothing is read back to the host.

    :param num_tasks: number of tasks ``k``.
    :param temperature: softmax temperature ``T`` (``> 0``); large ``T`` tends to equal weights.
    :param window: updates per window, the stand-in for the paper's epoch (an integer ``>= 1``).
    """

    uses_task_gradients = False
    needs_update = False

    def __init__(self, num_tasks: int, temperature: float = 2.0, window: int = 500) -> None:
        super().__init__(num_tasks)
        self.temperature = check_float("temperature", temperature, min_value=0.0, strict=True)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1 (updates per window), got {window!r}")
        self.window = window
        self.history = torch.zeros(2 * window, self.num_tasks)  # oldest first, [2 * window, num_tasks]
        self.calls = 0  # losses seen so far
        self._weights = torch.ones(self.num_tasks)

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]`` non-negative task losses.

        :returns: scalar ``sum_i w_i losses_i`` with the constant weights ``w`` ``[num_tasks]``
            from the history before this call; then this call's losses join the history.
        """
        losses = self._check_losses(losses)
        if self.history.device != losses.device:
            self.to(losses.device)
        return (self.loss_weights_fn(self.functional_state(), losses.detach()) * losses).sum()

    # -- functional form (mtrl_famo.update) --------------------------------------
    #: the call count, on the host, decides whether the windows are full
    vmappable = False

    def functional_state(self) -> dict[str, Tensor]:
        """``history`` ``[2 * window, num_tasks]`` (oldest first) and the last ``weights`` ``[num_tasks]``."""
        return {"history": self.history, "weights": self._weights}

    def loss_weights_fn(self, state: dict[str, Tensor], losses: Tensor, *draws: Tensor) -> Tensor:
        """``k softmax(r / T)`` from the history before this call (all 1 until two windows are full);
        then ``losses`` join the history and the call count grows."""
        losses = self._check_losses(losses)
        self._check_non_negative(losses, "it divides window means of them")
        history = state["history"]
        if self.calls >= 2 * self.window:
            older = history[: self.window].mean(dim=0)  # L(t-2), [num_tasks]
            recent = history[self.window:].mean(dim=0)  # L(t-1), [num_tasks]
            ratio = recent / older.clamp_min(torch.finfo(older.dtype).tiny)
            weights = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        else:
            weights = torch.ones_like(history[0])
        state["weights"].copy_(weights)
        history.copy_(torch.cat([history[1:], losses.to(history.dtype)[None]]))
        self.calls += 1
        return weights.to(losses.dtype)

    @property
    def task_weights(self) -> Tensor:
        """``[num_tasks]``, the weights of the last ``combine_losses`` (all 1 before it); sum ``num_tasks``."""
        return self._weights.clone()

    def state_dict(self) -> dict[str, Any]:
        """The loss history ``[2 * window, num_tasks]``, the call count and the last weights."""
        return {"history": self.history.clone(), "calls": self.calls, "weights": self._weights.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"history", "calls", "weights"})
        expected = (2 * self.window, self.num_tasks)
        if tuple(state["history"].shape) != expected:
            raise ValueError(f"expected a DWA history of shape [2 * window={expected[0]}, num_tasks={expected[1]}], "
                             f"got {tuple(state['history'].shape)} (a different window or number of tasks)")
        device = self.history.device
        self.history = state["history"].to(device).clone()
        self.calls = int(state["calls"])
        self._weights = state["weights"].to(device).clone()

    def to(self, device: torch.device | str) -> "DWA":
        """Move the history and the last weights to ``device``."""
        self.history = self.history.to(device)
        self._weights = self._weights.to(device)
        return self

    def __repr__(self) -> str:
        return f"DWA(temperature={self.temperature:g}, window={self.window})"
