"""The host implementations of PCGrad and CAGrad, kept as references.

Until issue 13 these were ``PCGrad`` and ``CAGrad``: both read the ``[k, k]`` Gram
matrix back to the host (one device sync per call) and solved there, PCGrad's
projections in NumPy and CAGrad's simplex problem by accelerated projected
gradient until the Frank-Wolfe gap falls below ``1e-12`` (or 10000 iterations).
The registered aggregators now solve on the device with a fixed number of
iterations; these classes stay (not registered in ``make_aggregator``) as the
near-exact oracle of the tests and as the "before" of
``scripts/bench_aggregators.py --combine``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Aggregator, check_float, gram_matrix


class HostPCGrad(Aggregator):
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

    For each task ``i``, start from ``g_i``; for each other task ``j`` in a random
    order (an independent permutation per ``i``), if ``g_i . g_j < 0`` replace
    ``g_i <- g_i - (g_i . g_j) / |g_j|^2 g_j``, using the original ``g_j``.
    Returns the mean of the projected ``g_i``.

    Implementation notes (not deviations): the projections are carried out on
    the ``[num_tasks, num_tasks]`` Gram matrix ``G G^T`` in float64, keeping each
    projected gradient as a coefficient vector over the original rows, so the
    cost after one matmul is independent of ``num_params`` and the result is
    ``coefficients @ G`` (exact in exact arithmetic). The random orders come
    from this aggregator's own CPU ``torch.Generator`` (also when ``G`` is on
    CUDA). A task ``j`` with ``g_j = 0`` never conflicts. The paper's code sums
    the projected gradients; this returns their mean, the same direction.

    :param num_tasks: number of tasks ``k``.
    :param seed: seed of the generator of the random orders.
    """

    uses_task_gradients = True

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction."""
        G = self._check_matrix(G, check_values=False)
        k = self.num_tasks
        if k == 1:
            return G[0].clone()
        # The k-1 small steps run in NumPy, whose operations on [k, k] arrays cost a
        # fraction of torch's: a combine took 0.22 ms at k=10 and 1.30 ms at k=50 with
        # torch, 0.11 and 0.70 ms with NumPy. On a GPU that is host time in every update.
        gram = gram_matrix(G).cpu().numpy()  # [k, k] float64 on CPU, one device sync

        # order[i] is a uniformly random permutation of the tasks other than i.
        keys = torch.rand(k, k, generator=self._generator, dtype=torch.float64)
        keys.fill_diagonal_(2.0)  # task i sorts last, then is dropped
        order = keys.argsort(dim=1)[:, : k - 1].numpy()

        # coef[i] @ G is the projected gradient of task i; all i step together.
        coef = np.eye(k)
        rows = np.arange(k)
        sq_norms = np.maximum(gram.diagonal(), np.finfo(np.float64).tiny)
        for step in range(k - 1):
            j = order[:, step]  # [k]: the task each i projects against now
            dots = (coef * gram[j]).sum(axis=1)  # (projected g_i) . g_j
            coef[rows, j] -= np.where(dots < 0, dots / sq_norms[j], 0.0)
        weights = torch.from_numpy(coef.mean(axis=0)).to(G.device, G.dtype)
        return weights @ G

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": ByteTensor}``: the state of the order generator."""
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"generator"})
        self._generator.set_state(state["generator"].clone())

    def __repr__(self) -> str:
        return f"HostPCGrad(seed={self.seed})"


class HostCAGrad(Aggregator):
    """CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning").

    With ``g0`` the mean of the rows of ``G`` and ``g_w = G^T w``, solve the dual
    problem over the probability simplex

        w* = argmin_w  g_w . g0 + c |g0| |g_w|

    and return ``(g0 + c |g0| / |g_w*| g_w*) / (1 + c^2)``. Before the rescaling
    by ``1 / (1 + c^2)`` (which the paper's code applies), this is the direction
    ``d`` within ``|d - g0| <= c |g0|`` that maximises ``min_i g_i . d``.

    Implementation notes: the inner problem is solved on the
    ``[num_tasks, num_tasks]`` Gram matrix ``G G^T`` in float64 (cost independent
    of ``num_params`` after one matmul) by accelerated projected gradient with
    exact Euclidean projection onto the simplex, Lipschitz backtracking and
    adaptive restart, until the Frank-Wolfe duality gap or the step falls below
    ``1e-12`` (relative to the mean squared gradient norm) or 10000 iterations;
    the paper's code takes 20 SGD steps on softmax logits instead.
    Deviation: where ``|g_w*|`` is zero up to solver accuracy (some convex
    combination of task gradients cancels out, a Pareto-stationary point), the
    formula has no defined direction and ``g0 / (1 + c^2)`` is returned. ``c = 0``
    returns exactly ``G.mean(0)``; ``G = 0`` or ``g0 = 0`` give zeros.

    :param num_tasks: number of tasks ``k``.
    :param c: radius of the trust region around ``g0``, relative to ``|g0|`` (``>= 0``).
    """

    uses_task_gradients = True

    def __init__(self, num_tasks: int, c: float = 0.5) -> None:
        super().__init__(num_tasks)
        self.c = check_float("c", c, min_value=0.0)
        self._weights: Tensor | None = None
        #: information on the last inner solve: iterations, gap, |g_w*| (relative).
        self.solver_info: dict[str, float] = {}

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction."""
        G = self._check_matrix(G, check_values=False)
        gram = gram_matrix(G).cpu().numpy()  # [k, k] float64, one device sync
        w, coef = cagrad_weights(gram, self.c, info=self.solver_info)
        self._weights = torch.from_numpy(w)
        if self.c == 0.0:
            return G.mean(dim=0)
        # d = (g0 + coef * g_w) / (1 + c^2) = alpha @ G
        alpha = (1.0 / self.num_tasks + coef * w) / (1.0 + self.c**2)
        return torch.from_numpy(alpha).to(G.device, G.dtype) @ G

    @property
    def task_weights(self) -> Tensor | None:
        """``[num_tasks]`` float64, the last ``w*`` (None before the first ``combine``)."""
        return None if self._weights is None else self._weights.clone()

    def state_dict(self) -> dict[str, Any]:
        """``{"weights": last w* [num_tasks] or None}``."""
        return {"weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"weights"})
        w = state["weights"]
        if w is not None and tuple(w.shape) != (self.num_tasks,):
            raise ValueError(f"expected weights of shape [num_tasks={self.num_tasks}], got {tuple(w.shape)}")
        self._weights = None if w is None else w.detach().to("cpu", torch.float64).clone()

    def __repr__(self) -> str:
        return f"HostCAGrad(c={self.c:g})"


def cagrad_weights(
    gram: np.ndarray, c: float, tol: float = 1e-12, max_iter: int = 10_000, info: dict | None = None
) -> tuple[np.ndarray, float]:
    """Solve CAGrad's inner problem on the Gram matrix.

    :param gram: ``[num_tasks, num_tasks]`` float64, ``G G^T``.
    :param c: CAGrad's ``c >= 0``.
    :param tol: stopping tolerance on the duality gap and on the step, relative
        to the mean squared gradient norm.
    :param info: if given, filled with ``iterations``, ``gap`` and ``gw_norm``
        (``|g_w*|`` relative to the root mean squared gradient norm).
    :returns: ``(w*, coef)``: ``w*`` ``[num_tasks]`` on the simplex, and
        ``coef = c |g0| / |g_w*|`` (0 where undefined), so that the CAGrad
        direction is ``(g0 + coef * G^T w*) / (1 + c^2)``.
    """
    k = gram.shape[0]
    info = {} if info is None else info
    info.update(iterations=0, gap=0.0, gw_norm=0.0)
    scale = float(np.trace(gram)) / k
    uniform = np.full(k, 1.0 / k)
    if scale <= 0.0:  # G == 0
        return uniform, 0.0
    A = gram / scale  # rows of G now have mean squared norm 1
    b = A.mean(axis=1)  # b_i = g_i . g0
    g0_norm = math.sqrt(max(float(b.mean()), 0.0))
    if g0_norm == 0.0:  # the gradients cancel on average: any w, direction 0
        return uniform, 0.0
    rho = c * g0_norm
    if rho == 0.0:  # c == 0: the objective is linear, minimised at a vertex
        w = np.zeros(k)
        w[int(np.argmin(b))] = 1.0
    else:
        w = _solve_simplex(A, b, rho, tol, max_iter, info)
    gw_norm = math.sqrt(max(float(w @ A @ w), 0.0))
    info["gw_norm"] = gw_norm
    if rho == 0.0 or gw_norm <= 1e-6:  # no defined direction for g_w* = 0: use g0
        return w, 0.0
    return w, rho / gw_norm


def _solve_simplex(A: np.ndarray, b: np.ndarray, rho: float, tol: float, max_iter: int, info: dict) -> np.ndarray:
    """Minimise ``f(w) = b . w + rho sqrt(w^T A w)`` over the simplex (convex).

    Accelerated projected gradient (FISTA) with a gradient-based Lipschitz
    backtracking (robust when ``f`` changes below rounding error), the
    gradient-based adaptive restart of O'Donoghue & Candes, and stopping on the
    Frank-Wolfe gap ``g . w - min_i g_i >= f(w) - f(w*)`` or on the step size.
    """

    def grad(w: np.ndarray) -> np.ndarray:
        Aw = A @ w
        s = math.sqrt(max(float(w @ Aw), 0.0))
        return b + (rho / s) * Aw if s > 1e-150 else b.copy()  # 0 is a subgradient of |.| at 0

    w = np.full(b.size, 1.0 / b.size)
    y, g_y = w, grad(w)
    t, L = 1.0, 1.0
    gap = math.inf
    for it in range(1, max_iter + 1):
        while True:
            w_new = project_simplex(y - g_y / L)
            step = w_new - y
            g_new = grad(w_new)
            if np.linalg.norm(g_new - g_y) <= L * np.linalg.norm(step) * (1.0 + 1e-12):
                break
            L *= 2.0
        gap = float(g_new @ w_new - g_new.min())
        change = float(np.abs(w_new - w).max())
        if (y - w_new) @ (w_new - w) > 0.0:  # momentum points uphill: restart
            t, y = 1.0, w_new
        else:
            t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            y = w_new + ((t - 1.0) / t_new) * (w_new - w)
            t = t_new
        w = w_new
        if gap <= tol or change <= tol:
            break
        g_y = grad(y)
        L *= 0.9  # let the step grow again where the function is flatter
    info.update(iterations=it, gap=gap)
    return w


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection of ``v`` ``[n]`` onto ``{w >= 0, sum(w) = 1}``."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    ranks = np.arange(1, v.size + 1)
    r = np.nonzero(u - css / ranks > 0)[0][-1]
    return np.maximum(v - css[r] / (r + 1), 0.0)
