"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import torch
from torch import Tensor

from .gramian import GramianWeighted, host_weights, require_modules

#: ridge added to the trace-normalised Gram matrix so that quadprog's Cholesky exists when
#: ``G`` is rank-deficient (more tasks than independent gradients, duplicate or zero rows).
#: Ours: small enough that the weights are the exact minimiser to ~1e-8 of the objective.
_RIDGE = 1e-10


class MGDA(GramianWeighted):
    """MGDA (Sener and Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization";
    Désidéri 2012): the direction is the minimum-norm element of the convex hull of the rows,

        w* = argmin_{w in simplex} |G^T w|^2,   d = G^T w*,

    a common descent direction of every task (``g_i . d >= |d|^2``), zero at a Pareto-stationary
    point. ``task_weights`` is ``w*``.

    Deviation: the paper's Algorithm 2 (and TorchJD's ``MGDAWeighting``) runs Frank-Wolfe
    for at most ``MAX_ITER = 250`` steps (``min_norm_solvers.py``), which converges sublinearly
    and stops short of the minimiser; here the same quadratic program on the ``[k, k]`` Gram
    matrix (scaled to unit trace, plus a ``1e-10`` ridge) is solved exactly with quadprog
    (the QP solver TorchJD uses for UPGrad and DualProj), on a host copy of the Gram matrix:
    one device-to-host read per call. Nor is the paper's MGDA-UB (gradients of a shared
    representation) or its gradient normalisation used: ``G`` is the full per-task gradient,
    unnormalised, as for every aggregator here. ``G = 0`` gives uniform weights and a zero
    direction.

    :param num_tasks: number of tasks ``k``.
    """

    vmappable = False  # the solver runs on the host, on each member's Gram matrix

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        require_modules("mgda", ("qpsolvers", "quadprog"), "torchjd[quadprog-projector]>=0.18,<0.19")

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        return host_weights(min_norm_weights, gram)

    def __repr__(self) -> str:
        return "MGDA()"


def min_norm_weights(gram: Tensor) -> Tensor:
    """``argmin_{w in simplex} w^T gram w`` on the host, with quadprog.

    :param gram: ``[k, k]`` float64 CPU, positive semi-definite. :returns: ``[k]`` float64.
    """
    import numpy as np
    from qpsolvers import solve_qp

    k = gram.shape[0]
    trace = float(gram.diagonal().sum())
    if k == 1 or trace <= 0.0:
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    A = gram.numpy() / trace
    A = 0.5 * (A + A.T) + _RIDGE * np.eye(k)
    w = solve_qp(A, np.zeros(k), -np.eye(k), np.zeros(k), np.ones((1, k)), np.ones(1), solver="quadprog")
    if w is None:  # not seen on PSD input; the uniform weights are a safe, documented fallback
        return torch.full((k,), 1.0 / k, dtype=torch.float64)
    w = np.clip(w, 0.0, None)
    return torch.from_numpy(w / w.sum())
