"""The plain mean: the baseline multi-task update (uniform task weights)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Aggregator


class Mean(Aggregator):
    """Uniform average over tasks; serves both families.

    ``combine(G)`` returns ``G.mean(0)`` and ``combine_losses(losses)`` returns
    ``losses.mean()``; both give the same update. The agent uses the cheaper loss
    form (``uses_task_gradients`` is False).

    :param num_tasks: number of tasks ``k``.
    """

    uses_task_gradients = False
    _loss_weights: Tensor | None = None  # [num_tasks], set by combine_losses

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]``, ``G.mean(0)``."""
        return self._check_matrix(G).mean(dim=0)

    def combine_losses(self, losses: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]``. :returns: scalar, ``losses.mean()``."""
        losses = self._check_losses(losses)
        self._loss_weights = torch.full_like(losses.detach(), 1.0 / self.num_tasks)
        return losses.mean()

    def combine_fn(self, state: dict, G: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor]:
        """:param G: ``[num_tasks, num_params]``. :returns: ``G.mean(0)`` and the weights, all ``1 / num_tasks``."""
        return self._check_matrix(G).mean(dim=0), G.new_full((self.num_tasks,), 1.0 / self.num_tasks)

    def loss_weights_fn(self, state: dict, losses: Tensor, *draws: Tensor) -> Tensor:
        """:param losses: ``[num_tasks]``. :returns: ``[num_tasks]``, all ``1 / num_tasks``."""
        return torch.full_like(self._check_losses(losses), 1.0 / self.num_tasks)

    def note_weights(self, weights: Tensor) -> None:
        self._loss_weights = weights

    @property
    def loss_weights(self) -> Tensor | None:
        """``[num_tasks]``, all ``1 / num_tasks`` (None before the first ``combine_losses``)."""
        return self._loss_weights

    @property
    def task_weights(self) -> Tensor:
        """``[num_tasks]``, all ``1 / num_tasks`` (on the device of the last ``combine_losses``)."""
        weights = self.loss_weights
        return torch.full((self.num_tasks,), 1.0 / self.num_tasks) if weights is None else weights
