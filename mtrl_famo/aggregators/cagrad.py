"""CAGrad: the update that maximises the worst task's improvement near the mean gradient."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Aggregator, LastWeights, check_float, gram_matrix


class CAGrad(LastWeights, Aggregator):
    """CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning").

    With ``g0`` the mean of the rows of ``G`` and ``g_w = G^T w``, solve the dual
    problem over the probability simplex

        w* = argmin_w  g_w . g0 + c |g0| |g_w|

    and return ``(g0 + c |g0| / |g_w*| g_w*) / (1 + c^2)``. Before the rescaling
    by ``1 / (1 + c^2)`` (which the paper's code applies), this is the direction
    ``d`` within ``|d - g0| <= c |g0|`` that maximises ``min_i g_i . d``.

    Implementation notes: the inner problem is solved on the
    ``[num_tasks, num_tasks]`` Gram matrix ``G G^T`` in float64 (cost independent
    of ``num_params`` after one matmul), on ``G``'s device, with a fixed number of
    iterations and nothing read back to the host (:func:`solve_cagrad_weights`: a
    primal-dual interior-point method, ``iterations`` Mehrotra steps, default 20);
    the paper's code takes 20 SGD steps on softmax logits instead, an inexact
    solve. Deviation: where ``|g_w*|`` is zero up to solver accuracy (``<= 1e-4``
    relative to the root mean squared gradient norm: some convex combination of
    task gradients cancels out, a Pareto-stationary point), the formula has no
    defined direction and ``g0 / (1 + c^2)`` is returned. ``c = 0`` returns
    exactly ``G.mean(0)``; ``G = 0`` or ``g0 = 0`` give zeros.

    :param num_tasks: number of tasks ``k``.
    :param c: radius of the trust region around ``g0``, relative to ``|g0|`` (``>= 0``).
    """

    uses_task_gradients = True
    #: fixed number of interior-point iterations of every solve.
    iterations: int = 20

    def __init__(self, num_tasks: int, c: float = 0.5) -> None:
        super().__init__(num_tasks)
        self.c = check_float("c", c, min_value=0.0)
        self._weights: Tensor | None = None
        #: tensors (on G's device, not read back) describing the last solve: ``gap``, the
        #: Frank-Wolfe duality gap of ``w*`` and ``gw_norm``, ``|g_w*|``, both relative
        #: to the mean squared / root mean squared gradient norm.
        self.solver_info: dict[str, Tensor] = {}

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction."""
        direction, w, info = self._solve(G)
        self.solver_info = info  # a new dict: a compiled update need not read the old
        self._weights = w
        return direction

    def combine_fn(self, state: dict, G: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor]:
        """``combine(G)`` and ``w*`` ``[num_tasks]``, nothing kept."""
        direction, w, _ = self._solve(G)
        return direction, w

    def _solve(self, G: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The direction ``[num_params]``, ``w*`` ``[num_tasks]`` and the solver's ``gap`` and ``gw_norm``."""
        G = self._check_matrix(G, check_values=False)
        gram = gram_matrix(G, check=self.immediate_checks)  # [k, k] float64, on G's device
        w, coef, gap, gw_norm = torch.ops.mtrl_famo.cagrad_solve(gram, self.c, self.iterations)
        info = {"gap": gap, "gw_norm": gw_norm}
        if self.c == 0.0:
            return G.mean(dim=0), w, info
        # d = (g0 + coef * g_w) / (1 + c^2) = alpha @ G
        alpha = (1.0 / self.num_tasks + coef * w) / (1.0 + self.c**2)
        return alpha.to(G.dtype) @ G, w, info

    def state_dict(self) -> dict[str, Any]:
        """``{"weights": last w* [num_tasks] or None}``."""
        return {"weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"weights"})
        w = state["weights"]
        if w is not None and tuple(w.shape) != (self.num_tasks,):
            raise ValueError(f"expected weights of shape [num_tasks={self.num_tasks}], got {tuple(w.shape)}")
        self._weights = None if w is None else w.detach().to(torch.float64).clone()

    def __repr__(self) -> str:
        return f"CAGrad(c={self.c:g})"


#: below this |g_w*| (relative to the root mean squared gradient norm) g_w* counts as zero.
#: The host reference used 1e-6; where the optimum is such a kink inside the simplex (a
#: low-rank G with c >= 1), 20 interior-point steps get |g_w| only to about 1e-5.
ZERO_GW = 1e-4
#: the complementarity (and smoothing) the interior-point method stops lowering at.
_MU_FLOOR = 1e-13
#: step lengths tried along each Newton direction, as fractions of the longest feasible one.
_STEPS = tuple(0.25**j for j in range(12)) + (0.0,)


def solve_cagrad_weights(gram: Tensor, c: float, iterations: int = 20,
                         info: dict | None = None) -> tuple[Tensor, Tensor]:
    """Solve CAGrad's inner problem on the Gram matrix, on its device, in ``iterations`` steps.

    With ``A`` the Gram matrix scaled to unit mean diagonal, ``b = A 1 / k`` and
    ``rho = c |g0|``, minimise ``f(w) = b . w + rho sqrt(w^T A w)`` over the simplex.
    A primal-dual interior-point method (Mehrotra predictor-corrector) on the
    complementarity ``w_i z_i = mu`` of ``w >= 0``, with the norm smoothed as
    ``sqrt(s^2 + rho^2 w^T A w) - s log(s + ...)`` (the second-order-cone
    barrier with its epigraph variable minimised out, ``s = mu``), so that
    ``|g_w| -> 0`` (a kink of ``f``) stays tractable. Each step: one Cholesky
    of the ``[k, k]`` Newton matrix (scaled by ``sqrt(w / z)``, the simplex's
    sum constraint projected out), two solves, and a choice among a fixed set
    of step lengths of the one that lowers the barrier merit most (length 0
    included, so a bad direction is never taken). ``mu`` stops at ``1e-13``.
    Everything is tensor arithmetic on ``gram``'s device; nothing is read
    back, there is no data-dependent branch, and the work is the same for every
    input: fit for CUDA graphs. Affine invariance makes the iteration count
    independent of the scale of the gradients; 20 steps reach a duality gap
    below ``1e-9`` on the test matrices (k up to 50, parallel, opposite,
    duplicate and zero rows, low rank, norms spread over four decades).

    :param gram: ``[num_tasks, num_tasks]`` float64, ``G G^T``.
    :param c: CAGrad's ``c >= 0``.
    :param iterations: interior-point steps.
    :param info: if given, filled with ``gap`` and ``gw_norm`` (0-dim tensors on the device).
    :returns: ``(w*, coef)``: ``w*`` ``[num_tasks]`` on the simplex and the 0-dim
        ``coef = c |g0| / |g_w*|`` (0 where ``|g_w*| <= 1e-4``, relatively), so that
        the CAGrad direction is ``(g0 + coef * G^T w*) / (1 + c^2)``.
    """
    k = gram.shape[0]
    dtype, device = torch.float64, gram.device
    gram = gram.to(dtype)
    scale = (gram.diagonal().sum() / k).clamp_min(torch.finfo(dtype).tiny)
    A = gram / scale  # rows of G now have mean squared norm 1 (0 where G == 0)
    b = A.mean(dim=1)  # b_i = g_i . g0
    rho = c * b.mean().clamp_min(0.0).sqrt()
    if c == 0.0:  # the objective is linear, minimised at a vertex; the direction is g0
        w = torch.zeros(k, dtype=dtype, device=device).scatter_(0, b.argmin().view(1), 1.0)
        if info is not None:
            info.update(gap=torch.zeros((), dtype=dtype, device=device), gw_norm=(w @ A @ w).clamp_min(0.0).sqrt())
        return w, torch.zeros((), dtype=dtype, device=device)
    eye = torch.eye(k, dtype=dtype, device=device)
    # Built on the device: a tensor copied from a host list would be a copy and a sync (not capturable).
    steps = torch.cat([0.25 ** torch.arange(len(_STEPS) - 1, dtype=dtype, device=device),
                       torch.zeros(1, dtype=dtype, device=device)])  # _STEPS
    w = torch.full((k,), 1.0 / k, dtype=dtype, device=device)
    z = torch.ones(k, dtype=dtype, device=device)

    def longest_step(x: Tensor, dx: Tensor) -> Tensor:
        """The step along ``dx`` that keeps ``x > 0`` (0.99 of the way to the boundary), at most 1."""
        return (0.99 / (-dx / x).amax().clamp_min(1e-300)).clamp_max(1.0)

    for _ in range(iterations):
        w_prev, z_prev = w, z
        mu = (w @ z) / k
        s = mu.clamp_min(_MU_FLOOR)  # smoothing of the norm
        Aw = A @ w
        sigma = (s * s + rho * rho * (w @ Aw).clamp_min(0.0)).sqrt()
        grad = b + (rho * rho / (s + sigma)) * Aw  # of the smoothed f
        hess = (rho * rho / (s + sigma)) * A - (rho**4 / (sigma * (s + sigma) ** 2)) * torch.outer(Aw, Aw)

        # Newton matrix in the variables y = dw / sqrt(w / z), the direction n of the sum
        # constraint (dw . 1 = 0 <=> y . n = 0) projected out and given unit curvature.
        scaling = (w / z).sqrt()
        n = scaling / scaling.norm()
        M = scaling[:, None] * hess * scaling[None, :] + eye
        Mn = M @ n
        M = M - torch.outer(n, Mn) - torch.outer(Mn, n) + torch.outer((n @ Mn + 1.0) * n, n)
        L, failed = torch.linalg.cholesky_ex(M)

        def direction(rhs: Tensor) -> Tensor:
            r = scaling * rhs
            y = torch.cholesky_solve((r - n * (n @ r))[:, None], L)[:, 0]
            dw = scaling * (y - n * (n @ y))
            return torch.where((failed == 0) & torch.isfinite(dw).all(), dw, 0.0)

        dw_aff = direction(-grad)  # predictor: mu -> 0
        dz_aff = -z - z / w * dw_aff
        mu_aff = ((w + longest_step(w, dw_aff) * dw_aff) @ (z + longest_step(z, dz_aff) * dz_aff)) / k
        target = ((mu_aff / mu).clamp(0.0, 1.0) ** 3 * mu).clamp_min(_MU_FLOOR)
        tau = target - dw_aff * dz_aff  # corrector: Mehrotra's second-order term
        dw = direction(-grad + tau / w)
        dz = (tau - w * z - z * dw) / w

        # The step length along dw that lowers the barrier merit most (0 included).
        cand = w + (longest_step(w, dw) * steps)[:, None] * dw  # [len(_STEPS), k]
        sig_c = (s * s + rho * rho * ((cand @ A) * cand).sum(-1).clamp_min(0.0)).sqrt()
        merit = cand @ b + sig_c - s * torch.log(s + sig_c) - target * torch.log(cand).sum(-1)
        merit = torch.where(torch.isfinite(merit), merit, torch.inf)
        w = torch.index_select(cand, 0, merit.argmin().view(1))[0]
        w = w / w.sum()
        z = z + longest_step(z, dz) * dz
        ok = torch.isfinite(w).all() & torch.isfinite(z).all() & (w > 0).all() & (z > 0).all()
        w, z = torch.where(ok, w, w_prev), torch.where(ok, z, z_prev)

    Aw = A @ w
    gw_norm = (w @ Aw).clamp_min(0.0).sqrt()
    defined = gw_norm > ZERO_GW
    coef = torch.where(defined, rho / gw_norm.clamp_min(ZERO_GW), 0.0)
    if info is not None:
        g = b + torch.where(defined, rho / gw_norm.clamp_min(ZERO_GW), 0.0) * Aw  # gradient of f at w
        info.update(gap=g @ w - g.min(), gw_norm=gw_norm)
    return w, coef


@torch.library.custom_op("mtrl_famo::cagrad_solve", mutates_args=())
def cagrad_solve(gram: Tensor, c: float, iterations: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`solve_cagrad_weights` as one operator: ``(w*, coef, gap, gw_norm)``.

    An operator is opaque to ``torch.compile``: a compiled update
    (``train.compile=graph``) holds the solve as one node that runs these eager
    kernels, instead of tracing its ~2000 small operations per network (which took
    the compiler over ten minutes on CPU). It reads nothing back, so a CUDA graph
    still captures it.
    """
    info: dict[str, Tensor] = {}
    w, coef = solve_cagrad_weights(gram, c, iterations, info=info)
    return w, coef, info["gap"], info["gw_norm"]


@cagrad_solve.register_fake
def _cagrad_solve_shapes(gram: Tensor, c: float, iterations: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    scalar = gram.new_empty((), dtype=torch.float64)
    return gram.new_empty(gram.shape[0], dtype=torch.float64), scalar, scalar.clone(), scalar.clone()


@cagrad_solve.register_vmap
def _cagrad_solve_members(info, in_dims, gram: Tensor, c: float, iterations: int):
    """Under a population's vmap: one solve per member (``gram`` ``[N, k, k]``), results stacked."""
    (gram_dim, _, _) = in_dims
    if gram_dim is None:
        return cagrad_solve(gram, c, iterations), (None, None, None, None)
    outs = [cagrad_solve(g, c, iterations) for g in gram.movedim(gram_dim, 0)]
    return tuple(torch.stack(parts) for parts in zip(*outs)), (0, 0, 0, 0)
