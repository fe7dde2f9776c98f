"""FAMO: task weights adapted so that all task losses fall at a similar rate."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mtrl_famo.optim import adam_step_, adam_tensors, fused_adam, load_fused_adam_state

from .base import Aggregator, check_float


class FAMO(Aggregator):
    """FAMO (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization").

    Keeps logits ``xi`` ``[num_tasks]`` (zeros at start) and ``z = softmax(xi)``.
    Each update:

    1. ``combine_losses(losses)``: with ``l = losses - min_losses + eps``, returns
       a scalar whose gradient is ``sum_i lambda_i grad l_i`` with
       ``lambda = (z / l) / sum(z / l)`` computed from the detached ``l``
       (the weights sum to 1), i.e. the gradient of ``sum_i z_i log l_i``
       divided by the normaliser ``sum(z / l)``. The value is ``sum_i lambda_i l_i``.
    2. the caller backpropagates it and steps its optimizer;
    3. ``update(new_losses)``: the same batch's losses recomputed with the
       updated parameters; ``delta = log l_prev - log l_new`` and ``xi`` takes one
       Adam step (lr ``w_lr``, weight decay ``gamma``) on ``J_softmax(xi)^T delta``,
       shifting weight toward the tasks whose loss fell least.

    Deviation from one public reference implementation, which multiplies by
    the normaliser ``sum(z / l)``: this follows the paper and divides by it.

    :param num_tasks: number of tasks ``k``.
    :param w_lr: learning rate of the logits' Adam (``> 0``).
    :param gamma: weight decay of the logits' Adam (``>= 0``).
    :param min_losses: lower bounds of the task losses: a float or ``num_tasks`` floats.
    :param eps: small constant added to ``l`` (``> 0``).
    """

    uses_task_gradients = False
    needs_update = True

    def __init__(
        self,
        num_tasks: int,
        w_lr: float = 0.025,
        gamma: float = 0.001,
        min_losses: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(num_tasks)
        self.w_lr = check_float("w_lr", w_lr, min_value=0.0, strict=True)
        self.gamma = check_float("gamma", gamma, min_value=0.0)
        self.eps = check_float("eps", eps, min_value=0.0, strict=True)
        self.min_losses = _min_losses_tensor(min_losses, self.num_tasks)
        self.logits = torch.zeros(self.num_tasks, requires_grad=True)
        self._optimizer = fused_adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        adam_tensors(self._optimizer)  # its state exists from the start: a compiled update need not create it
        self._prev_losses: Tensor | None = None  # detached l of the last combine_losses
        self._loss_weights: Tensor | None = None  # lambda of the last combine_losses

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]`` task losses, each above its ``min_losses``.

        :returns: scalar whose gradient is ``sum_i lambda_i grad losses_i``.
        """
        losses = self._check_losses(losses)
        device = losses.device
        l = losses - self.min_losses.to(device) + self.eps
        l_detached = l.detach()
        self._check_positive(l_detached, losses.detach())
        z = self.task_weights.to(device)
        weights = z / l_detached
        weights = weights / weights.sum()
        self._prev_losses = l_detached.clone()
        self._loss_weights = weights
        return (weights * l).sum()

    def update(self, new_losses: Tensor) -> None:
        """One Adam step on the logits.

        :param new_losses: ``[num_tasks]`` losses of the batch given to the last
            ``combine_losses``, recomputed after the optimizer step.
        """
        if self._prev_losses is None:
            raise RuntimeError(
                "FAMO.update(new_losses) needs the losses of a preceding combine_losses(losses); "
                "call combine_losses before each update"
            )
        new_losses = self._check_losses(new_losses, "new_losses").detach()
        device = self.logits.device
        l_new = new_losses.to(device) - self.min_losses.to(device) + self.eps
        self._check_positive(l_new, new_losses)
        delta = self._prev_losses.to(device).log() - l_new.log()
        # The gradient of z . delta with respect to the logits (z = softmax(logits)), in
        # closed form, and the logits' Adam step taken on the optimizer's own state:
        # no autograd call and no optimizer object, so a compiled update can trace it.
        z = torch.softmax(self.logits.detach(), dim=0)
        grad = z * (delta - (z * delta).sum())
        # The logits keep their own dtype (float32): float64 losses give a float64 delta.
        adam_step_(adam_tensors(self._optimizer), [grad.to(self.logits.dtype)])
        self._prev_losses = None

    @property
    def task_weights(self) -> Tensor:
        """``[num_tasks]``, ``z = softmax(xi)`` (detached)."""
        return torch.softmax(self.logits.detach(), dim=0)

    @property
    def loss_weights(self) -> Tensor | None:
        """``[num_tasks]``, the ``lambda`` of the last ``combine_losses`` (None before it)."""
        return None if self._loss_weights is None else self._loss_weights.clone()

    def graph_state(self) -> list[Tensor]:
        """``logits`` and its Adam state, which the update steps in place."""
        adam = adam_tensors(self._optimizer)
        return [*adam.params, *adam.exp_avg, *adam.exp_avg_sq, *adam.steps]

    def state_dict(self) -> dict[str, Any]:
        """Logits, the logits' Adam state, the pending previous losses and last weights."""
        return {
            "logits": self.logits.detach().clone(),
            "optimizer": copy.deepcopy(self._optimizer.state_dict()),
            "prev_losses": None if self._prev_losses is None else self._prev_losses.clone(),
            "loss_weights": self.loss_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"logits", "optimizer", "prev_losses", "loss_weights"})
        if tuple(state["logits"].shape) != (self.num_tasks,):
            raise ValueError(
                f"expected logits of shape [num_tasks={self.num_tasks}], got {tuple(state['logits'].shape)}"
            )
        device = self.logits.device
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        load_fused_adam_state(self._optimizer, copy.deepcopy(state["optimizer"]))
        self._prev_losses = None if state["prev_losses"] is None else state["prev_losses"].to(device).clone()
        self._loss_weights = None if state["loss_weights"] is None else state["loss_weights"].to(device).clone()

    def to(self, device: torch.device | str) -> "FAMO":
        """Move the logits, their Adam state and the stored losses to ``device``."""
        state = self.state_dict()
        self.logits = torch.zeros(self.num_tasks, device=device, requires_grad=True)
        self._optimizer = fused_adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self.min_losses = self.min_losses.to(device)
        self.load_state_dict(state)
        adam_tensors(self._optimizer)
        return self

    def __repr__(self) -> str:
        return f"FAMO(w_lr={self.w_lr:g}, gamma={self.gamma:g})"

    def _check_positive(self, l: Tensor, losses: Tensor) -> None:
        if self.immediate_checks and not bool((l > 0).all()):
            bad = (l <= 0).nonzero().flatten().tolist()
            values = [round(float(losses[i]), 6) for i in bad]
            mins = [round(float(self.min_losses[i]), 6) for i in bad]
            raise ValueError(
                f"FAMO needs every task loss above its min_losses (it takes log(loss - min_losses)); "
                f"tasks {bad} have losses {values} with min_losses {mins}"
            )


def _min_losses_tensor(min_losses: float | Sequence[float], num_tasks: int) -> Tensor:
    """``[num_tasks]`` float32 tensor from a float or a sequence of ``num_tasks`` floats."""
    if isinstance(min_losses, (int, float)) and not isinstance(min_losses, bool):
        values = [float(min_losses)] * num_tasks
    else:
        try:
            values = [float(x) for x in min_losses]
        except (TypeError, ValueError):
            raise ValueError(f"min_losses must be a float or {num_tasks} floats, got {min_losses!r}") from None
        if len(values) != num_tasks:
            raise ValueError(f"min_losses must be a float or {num_tasks} floats, got {len(values)} values")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"min_losses must be finite, got {min_losses!r}")
    return torch.tensor(values)
