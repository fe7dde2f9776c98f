"""Uncertainty weighting: task weights ``exp(-s_i)`` from learned log-variances ``s_i``."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from mtrl_famo.optim import adam_step_, adam_tensors, fused_adam, load_fused_adam_state

from .base import Aggregator, check_float


class UW(Aggregator):
    """Uncertainty weighting (Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics").

    Keeps learned log-variances ``s`` ``[num_tasks]`` (zeros at start) and minimises

        ``sum_i exp(-s_i) L_i + s_i``

    jointly over the network's parameters and ``s``. This is the form of the authors'
    own PyTorch example (github.com/yaringal/multi-task-learning-example, the source
    that Nash-MTL's and FAMO's ``Uncertainty`` weight method cite), without the paper's
    regression factors ``1/2`` (``L_i / (2 sigma_i^2) + log sigma_i``): Nash-MTL/FAMO
    multiply the whole sum by ``0.5`` and LibMTL's ``UW`` uses ``L_i / (2 exp(s_i)) + s_i / 2``;
    all share the minimiser ``s_i = log L_i`` and differ by a constant factor of the
    gradient, which Adam (here and in the agent) all but ignores.

    Each ``combine_losses(losses)``:

    1. returns the scalar ``sum_i w_i L_i + s_i`` with ``w = exp(-s)`` detached (and
       ``s`` detached in the second term): its gradient with respect to the network's
       parameters is ``sum_i exp(-s_i) grad L_i``, the paper's;
    2. takes one Adam step (lr ``lr``) on ``s`` with the gradient of the same objective
       with respect to ``s``, in closed form from the detached losses:
       ``d/ds_i = 1 - exp(-s_i) L_i``, which vanishes at ``s_i = log L_i``.

    Where the papers' code puts ``s`` in the network's optimizer and takes both steps
    from one backward, the agent here backpropagates the scalar into the network's
    parameters only (``torch.autograd.grad`` over them), so ``s`` has its own Adam; the
    two steps still come from the same losses, as in one joint step. The step runs on
    the losses' device and reads nothing back to the host, and since it needs no
    recomputed losses, ``needs_update`` is False (no second forward pass).

    The weights ``exp(-s)`` are not normalised (at the start all are 1 and the scalar
    is the sum of the task losses, ``num_tasks`` times the mean). The losses must be
    non-negative: for ``L_i < 0`` the gradient ``1 - exp(-s_i) L_i`` is positive for
    every ``s_i``, so ``s_i -> -inf`` and the weight grows without bound (hence not
    on the SAC actor loss, which turns negative).

    :param num_tasks: number of tasks ``k``.
    :param lr: learning rate of the log-variances' Adam (``> 0``).
    """

    uses_task_gradients = False
    needs_update = False
    _loss_weights: Tensor | None = None  # [num_tasks], exp(-s) of the last combine_losses

    def __init__(self, num_tasks: int, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        self.lr = check_float("lr", lr, min_value=0.0, strict=True)
        self.log_vars = torch.zeros(self.num_tasks, requires_grad=True)  # s, [num_tasks]
        self._optimizer = fused_adam([self.log_vars], lr=self.lr)
        adam_tensors(self._optimizer)  # its state exists from the start: a compiled update need not create it

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]`` non-negative task losses.

        :returns: scalar ``sum_i exp(-s_i) L_i + s_i`` with ``s`` detached (its gradient:
            ``sum_i exp(-s_i) grad L_i``); afterwards ``s`` has taken one Adam step.
        """
        losses = self._check_losses(losses)
        if self.immediate_checks and not bool((losses.detach() >= 0).all()):
            bad = (losses.detach() < 0).nonzero().flatten().tolist()
            raise ValueError(f"UW needs non-negative task losses (with L < 0, exp(-s) L + s has no minimum in s); "
                             f"tasks {bad} have losses {[round(float(losses[i]), 6) for i in bad]}")
        s = self.log_vars.detach().to(losses.device)
        combined = (torch.exp(-s) * losses).sum() + s.sum()
        self._loss_weights = torch.exp(-s)
        # The Adam step on s, on the optimizer's own state (no optimizer.step(): a compiled update traces this).
        # s keeps its own dtype (float32) whatever the losses' dtype (float64 outside RL).
        adam_step_(adam_tensors(self._optimizer),
                   [self.log_var_gradient(losses.detach()).to(self.log_vars.device, self.log_vars.dtype)])
        return combined

    def log_var_gradient(self, losses: Tensor) -> Tensor:
        """``[num_tasks]``: the gradient of ``sum_i exp(-s_i) L_i + s_i`` with respect to ``s``
        at the current ``s``, ``1 - exp(-s) * losses``.

        :param losses: ``[num_tasks]`` task losses (detached).
        """
        return 1.0 - torch.exp(-self.log_vars.detach().to(losses.device)) * losses

    @property
    def loss_weights(self) -> Tensor | None:
        """``[num_tasks]``, ``exp(-s)`` of the last ``combine_losses`` (before its step on ``s``)."""
        return self._loss_weights

    @property
    def task_weights(self) -> Tensor:
        """``[num_tasks]``, ``exp(-s)`` (detached): the weights of the next ``combine_losses``."""
        return torch.exp(-self.log_vars.detach())

    def graph_state(self) -> list[Tensor]:
        """``log_vars`` and its Adam state, which the update steps in place."""
        adam = adam_tensors(self._optimizer)
        return [*adam.params, *adam.exp_avg, *adam.exp_avg_sq, *adam.steps]

    def state_dict(self) -> dict[str, Any]:
        """The log-variances ``s`` and their Adam state."""
        return {"log_vars": self.log_vars.detach().clone(),
                "optimizer": copy.deepcopy(self._optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"log_vars", "optimizer"})
        if tuple(state["log_vars"].shape) != (self.num_tasks,):
            raise ValueError(f"expected log_vars of shape [num_tasks={self.num_tasks}], "
                             f"got {tuple(state['log_vars'].shape)}")
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"])
        load_fused_adam_state(self._optimizer, copy.deepcopy(state["optimizer"]))

    def to(self, device: torch.device | str) -> "UW":
        """Move ``s`` and its Adam state to ``device``."""
        state = self.state_dict()
        self.log_vars = torch.zeros(self.num_tasks, device=device, requires_grad=True)
        self._optimizer = fused_adam([self.log_vars], lr=self.lr)
        self.load_state_dict(state)
        adam_tensors(self._optimizer)
        return self

    def __repr__(self) -> str:
        return f"UW(lr={self.lr:g})"
