"""FairGrad: alpha-fair allocation of the update among tasks (TorchJD's weighting)."""

from __future__ import annotations

from torch import Tensor

from .base import check_float
from .gramian import GramianWeighted, check_int, host_weights, require_modules


class FairGrad(GramianWeighted):
    """FairGrad (Ban and Ji 2024, "Fair Resource Allocation in Multi-Task Learning").

    The update ``d = G^T w`` maximises the alpha-fair utility of the tasks' improvements
    ``g_i . d``; its weights solve the paper's Eq. 4, the fixed point

        (G G^T w)_i = w_i^(-1/alpha),   w > 0,

    (``alpha -> 0``: linear scalarisation; ``alpha = 1``: proportional fairness, the
    Nash-MTL condition; ``alpha -> inf``: max-min fairness). ``task_weights`` is ``w``
    (not normalised: its scale follows that of the gradients).

    Uses TorchJD's ``FairGradWeighting``: ``scipy.optimize.least_squares`` on the residual
    of Eq. 4 from ``w = 1/k`` with ``w >= 0`` (the solver of the authors' supervised code),
    on a host copy of the Gram matrix: one device-to-host read per call. Deviation: the
    authors' Meta-World code (``mtrl_files/fairgrad.py``) takes 20 SGD steps (lr 0.1,
    momentum 0.5) on the squared residual instead, an inexact solve.

    :param num_tasks: number of tasks ``k``.
    :param alpha: the fairness exponent (``> 0``); 2.0 in the authors' MT10/MT50 runs.
    :param max_iters: least-squares function evaluations (``0``: SciPy's default, ``100 k``).
    """

    vmappable = False  # the solver runs on the host, on each member's Gram matrix

    def __init__(self, num_tasks: int, alpha: float = 2.0, max_iters: int = 0) -> None:
        super().__init__(num_tasks)
        self.alpha = check_float("alpha", alpha, min_value=0.0, strict=True)
        self.max_iters = check_int("max_iters", max_iters, min_value=0)
        require_modules("fairgrad", ("torchjd", "scipy"), "torchjd[fairgrad]>=0.18,<0.19")
        from torchjd.aggregation import FairGradWeighting

        self._weighting = FairGradWeighting(alpha=self.alpha, max_iters=self.max_iters or None)

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        return host_weights(self._weighting, gram)

    def __repr__(self) -> str:
        return f"FairGrad(alpha={self.alpha:g}, max_iters={self.max_iters})"
