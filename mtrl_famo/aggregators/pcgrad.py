"""PCGrad: project away the conflicting components of task gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Aggregator, gram_matrix
from .gramian import check_choice
from .seeded import CallSeeded

#: ``per_task``: each task its own random order of the others (the paper); ``shared``: one random
#: permutation of all tasks per call, walked by every task, itself included (Meta-World+ b025cdb
#: ``optim/pcgrad.py:63-80``: ``jax.random.permutation`` of the gradient rows, then every row
#: projected against every row in that order).
ORDERS = ("per_task", "shared")


class PCGrad(CallSeeded, Aggregator):
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

    For each task ``i``, start from ``g_i``; for each other task ``j`` in a random
    order (an independent permutation per ``i``), if ``g_i . g_j < 0`` replace
    ``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j``, using the original ``g_j``.
    Returns the mean of the projected ``g_i``.

    Implementation notes (not deviations): everything runs on ``G``'s device and
    nothing is read back to the host, so on a GPU the call only queues work. The
    projections are carried out on the ``[num_tasks, num_tasks]`` Gram matrix
    ``G G^T`` in float64, keeping each projected gradient as a coefficient vector
    over the original rows: ``k - 1`` steps of three small operations, all tasks
    stepping together, whose cost is independent of ``num_params``; the result
    is ``coefficients @ G`` (exact in exact arithmetic). A task ``j`` with
    ``g_j = 0`` never conflicts. The paper's code sums the projected gradients;
    this returns their mean, the same direction.

    Random orders: call ``n`` (counted on the host, so counting costs no sync)
    seeds a generator on ``G``'s device with ``splitmix64(seed, n)`` and draws
    ``[k, k]`` uniform keys there; each row's ``argsort`` (task ``i`` itself
    sorted last and dropped) is a uniformly random permutation of the other
    tasks, independent across rows and calls, as in the paper. The orders are a
    deterministic function of ``(seed, n, device type)``: the same on every run
    on one kind of device, not the same stream on CPU and CUDA. The state is the
    seed and the call count, so a checkpoint resumes the same sequence on any device.

    ``order="shared"`` (Meta-World+'s PCGrad): one uniformly random permutation of all ``k``
    tasks per call, the same for every task ``i``, which also meets itself in it (a no-op
    unless its projected gradient has turned against ``g_i``); ``k`` steps per task.

    :param num_tasks: number of tasks ``k``.
    :param seed: seed of the random orders.
    :param order: ``per_task`` (the paper) or ``shared`` (see :data:`ORDERS`).
    """

    uses_task_gradients = True

    def __init__(self, num_tasks: int, seed: int = 0, order: str = "per_task") -> None:
        Aggregator.__init__(self, num_tasks)
        CallSeeded.__init__(self, seed)
        self.order = check_choice("order", order, ORDERS)

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction."""
        return self.combine_fn({}, G, *self.draws(G.device))[0]

    def draws(self, device: torch.device) -> tuple[Tensor, ...]:
        """``(order,)``: the next call's projection orders ``[k, k - 1]`` (``[k, k]`` shared; none for one task)."""
        return (self._orders(device),) if self.num_tasks > 1 else ()

    def combine_fn(self, state: dict, G: Tensor, *draws: Tensor) -> tuple[Tensor, None]:
        """``combine(G)`` with the projection orders ``[k, steps]`` drawn by :meth:`draws`; no weights."""
        G = self._check_matrix(G, check_values=False)
        k = self.num_tasks
        if k == 1:
            if self.immediate_checks:
                gram_matrix(G)  # the NaN/inf check
            return G[0].clone(), None
        (order,) = draws
        gram = gram_matrix(G, check=self.immediate_checks)  # [k, k] float64, on G's device

        # Step t of row i projects against task order[i, t]. Gathered once:
        # rows[i, t] = gram[order[i, t]] (its dots with every task) and
        # hits[i, t] = e_{order[i, t]} / |g_{order[i, t]}|^2 (where the step writes).
        # Out of place throughout: under a population's vmap, gram and order carry a member dimension.
        sq_norms = gram.diagonal().clamp_min(torch.finfo(torch.float64).tiny)
        rows = gram[order].unbind(1)  # one [k, k] tensor per step
        hits = torch.zeros(*order.shape, k, dtype=torch.float64, device=G.device)
        hits = hits.scatter(2, order[..., None], sq_norms.reciprocal()[order][..., None]).unbind(1)
        coef = torch.eye(k, dtype=torch.float64, device=G.device)  # coef[i] @ G: projected g_i
        for row, hit in zip(rows, hits):
            dots = torch.linalg.vecdot(coef, row)  # [k]: (projected g_i) . g_j
            coef = coef - dots.clamp_max(0.0)[:, None] * hit  # only where g_i . g_j < 0
        return coef.mean(dim=0).to(G.dtype) @ G, None

    def _orders(self, device: torch.device) -> Tensor:
        """``[k, k - 1]`` int64 on ``device``: row ``i`` a random order of the tasks other than ``i``;
        shared: ``[k, k]``, every row the same random permutation of all tasks."""
        k = self.num_tasks
        if self.order == "shared":
            keys = torch.rand(k, generator=self.next_generator(device), dtype=torch.float64, device=device)
            return keys.argsort().expand(k, k)
        keys = torch.rand(k, k, generator=self.next_generator(device), dtype=torch.float64, device=device)
        keys.fill_diagonal_(2.0)  # task i sorts last, then is dropped
        return keys.argsort(dim=1)[:, : k - 1]

    def state_dict(self) -> dict[str, Any]:
        """``{"seed": int, "calls": int}``: the stream and how many orders it has drawn."""
        return {"seed": self.seed, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also accepts the state of the earlier host implementation (``{"generator": ...}``,
        a CPU generator's state): the orders then restart from call 0 of this seed, a
        different draw from the same distribution."""
        if isinstance(state, dict) and set(state) == {"generator"}:
            self.calls = 0
            return
        self._check_state_keys(state, {"seed", "calls"})
        self.seed, self.calls = int(state["seed"]), int(state["calls"])

    def __repr__(self) -> str:
        return f"PCGrad(seed={self.seed})" if self.order == "per_task" else f"PCGrad(seed={self.seed}, order='shared')"

