"""Nash-MTL: the Nash bargaining solution among tasks (TorchJD's weighting, CVXPY)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .base import check_float, gram_matrix
from .gramian import GramianWeighted, check_choice, check_int, host_weights, require_modules

INSTALL = "mtrl-famo[nashmtl]"
#: What ``max_norm`` does to an update longer than it: ``clip`` rescales it to norm ``max_norm``
#: (the authors' ``clip_grad_norm_``); ``divide`` divides it by ``max_norm``, a no-op at 1.0 (the
#: RL code of FAMO's Nash-MTL re-run, Cranial-XIX/FAMO@0a6ad06 ``mtrl_files/nashmtl.py:191-194``).
MAX_NORM_MODES = ("clip", "divide")


class NashMTL(GramianWeighted):
    """Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", Algorithm 1).

    The weights ``w > 0`` solve the bargaining condition ``(G G^T w)_i = 1 / w_i`` (the
    paper's Eq. 2: each task's improvement ``g_i . d`` times its weight is 1), and the
    direction is ``d = G^T w``, so ``|d|`` is of order ``sqrt(k)`` whatever the scale of ``G``
    (the authors' solver works on ``G G^T`` scaled to unit Frobenius norm, with the scale put
    back in its constraint, so this holds for the raw Gram matrix), clipped to norm ``max_norm`` (the authors clip the
    update with ``clip_grad_norm_``; ``0`` disables it). The weights are recomputed every
    ``update_weights_every`` calls (the authors' option; between them the last weights are
    reused, and the Gram matrix is not computed). ``task_weights`` is the weight vector
    that multiplied ``G`` in the last call, the clipping included. One task, or ``G = 0``
    (where no bargaining solution exists), gives ``w = 1``. Where ``G G^T`` is singular the
    condition has no solution either and the solver's weights grow large; the clipping to
    ``max_norm`` keeps the step bounded.

    Solver: TorchJD's Nash-MTL weighting, the authors' sequence of convex problems
    (``optim_niter`` of them, each a CVXPY problem solved by ECOS, warm-started from the
    previous weights), on a host copy of the Gram matrix: one device-to-host read per
    recomputation (the matrix handed to TorchJD is a ``[k, k]`` square root of it, so that
    ``G`` itself is never copied). The clipping runs on the device, with no read back.
    CVXPY and ECOS are an optional extra: ``pip install "mtrl-famo[nashmtl]"``.

    State (``state_dict``): the call counter and the last solution, so that a resumed run
    keeps the recomputation schedule and the warm start.

    :param num_tasks: number of tasks ``k``.
    :param update_weights_every: recompute the weights every this many calls (authors' default 1).
    :param optim_niter: convex problems per recomputation (authors' default 20).
    :param max_norm: clip the direction to this norm, ``0`` for none (authors' default 1.0).
    :param max_norm_mode: ``clip`` or ``divide`` (see :data:`MAX_NORM_MODES`).
    """

    def __init__(self, num_tasks: int, update_weights_every: int = 1, optim_niter: int = 20,
                 max_norm: float = 1.0, max_norm_mode: str = "clip") -> None:
        super().__init__(num_tasks)
        self.update_weights_every = check_int("update_weights_every", update_weights_every, min_value=1)
        self.optim_niter = check_int("optim_niter", optim_niter, min_value=1)
        self.max_norm = check_float("max_norm", max_norm, min_value=0.0)
        self.max_norm_mode = check_choice("max_norm_mode", max_norm_mode, MAX_NORM_MODES)
        require_modules("nashmtl", ("cvxpy", "ecos", "torchjd"), INSTALL)
        self.calls = 0
        self._alpha: Tensor | None = None  # [k] float64, the last solution (unclipped)
        self._solver = None

    def _weighting(self):
        """TorchJD's weighting, created lazily (and again after a load, warm-started there)."""
        if self._solver is None:
            import numpy as np
            from torchjd.aggregation import NashMTL as TorchJDNashMTL

            # Our own schedule and clipping: TorchJD's weighting solves at every call, unclipped.
            self._solver = TorchJDNashMTL(self.num_tasks, max_norm=0.0, update_weights_every=1,
                                          optim_niter=self.optim_niter).weighting
            if self._alpha is not None:
                self._solver.prvs_alpha = self._alpha.cpu().numpy().astype(np.float64)
        return self._solver

    #: the call counter decides when to solve, and the solver warm-starts on the host
    vmappable = False

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction."""
        direction, self._weights = self.combine_fn({}, G)
        return direction

    def combine_fn(self, state: dict, G: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor]:
        """The direction and its weights ``[num_tasks]``; advances the schedule and the warm start (on ``self``)."""
        G = self._check_matrix(G, check_values=False)
        if self._alpha is None or self.calls % self.update_weights_every == 0:
            gram = gram_matrix(G, check=self.immediate_checks)
            self._alpha = host_weights(self._solve, gram)
        elif self.immediate_checks:
            gram_matrix(G)  # the NaN/inf check only
        self.calls += 1
        w = self._alpha.to(G.device)
        direction = w.to(G.dtype) @ G
        if self.max_norm > 0.0:
            norm = direction.norm()
            if self.max_norm_mode == "clip":
                scale = (self.max_norm / norm.clamp_min(torch.finfo(G.dtype).tiny)).clamp_max(1.0)
            else:  # divided by max_norm only where longer than it (on the device, no read back)
                scale = torch.where(norm > self.max_norm, 1.0 / self.max_norm, 1.0).to(G.dtype)
            direction = direction * scale
            w = w * scale.to(w.dtype)
        return direction, w

    def _solve(self, gram: Tensor) -> Tensor:
        """The bargaining weights for the CPU float64 ``gram`` ``[k, k]``."""
        if self.num_tasks == 1 or float(gram.norm()) == 0.0:
            # One task: (G G^T / |G G^T|) w = 1 / w is w = 1. G = 0: no bargaining solution, and
            # the direction is 0 whatever the weights; TorchJD's solver would divide by zero.
            return torch.ones(self.num_tasks, dtype=torch.float64)
        lam, V = torch.linalg.eigh(gram)
        root = V * lam.clamp_min(0.0).sqrt()  # root @ root.T == gram: TorchJD takes a matrix, not its Gram
        with warnings.catch_warnings():
            # CVXPY warns at every solve that the authors' problem is not DPP, and about inaccurate
            # solutions and divisions by zero on singular Gram matrices (which the solver survives,
            # see the class docs): noise in a training log, every update.
            warnings.simplefilter("ignore")
            alpha = self._weighting()(root)
        return alpha.to(torch.float64)

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        """The bargaining weights (unclipped) of ``gram``, solved now (no schedule, no state change)."""
        return host_weights(self._solve, gram)

    def state_dict(self) -> dict[str, Any]:
        """``{"calls": int, "alpha": last solution [k] or None, "weights": last weights [k] or None}``."""
        return {"calls": self.calls, "alpha": None if self._alpha is None else self._alpha.clone(),
                "weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"calls", "alpha", "weights"})
        self.calls = check_int("calls", state["calls"], min_value=0)
        self._alpha = self._load_weights(state["alpha"])
        self._weights = self._load_weights(state["weights"])
        self._solver = None  # rebuilt on the next solve, warm-started from alpha

    def __repr__(self) -> str:
        return (f"NashMTL(update_weights_every={self.update_weights_every}, optim_niter={self.optim_niter}, "
                f"max_norm={self.max_norm:g}, max_norm_mode={self.max_norm_mode!r})")
