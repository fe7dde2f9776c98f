"""UPGrad: average of each task gradient projected onto the dual cone of all of them (TorchJD)."""

from __future__ import annotations

from torch import Tensor

from .base import check_float
from .gramian import GramianWeighted, host_weights, require_modules

TORCHJD_QP = "torchjd[quadprog-projector]>=0.18,<0.19"


class UPGrad(GramianWeighted):
    """UPGrad (Quinton and Rey 2024, "Jacobian Descent for Multi-Objective Optimization").

    Each row ``g_i`` is projected onto the dual cone ``{x : G x >= 0}`` of the rows (the
    directions that conflict with no task), and the direction is the mean of the projections:
    it has a non-negative inner product with every task gradient. By the paper's
    Proposition 1 the projection of ``G^T u`` is ``G^T v`` with ``v = argmin v^T G G^T v``
    subject to ``v >= u``: ``k`` small quadratic programs on the Gram matrix, one per task
    (``u = e_i / k``); the weights are the sum of their solutions.

    Uses TorchJD's ``UPGradWeighting`` with its ``QuadprogProjector`` (the Gram matrix is
    scaled to unit trace, ``0`` below ``norm_eps``, and ``reg_eps`` is added to its diagonal
    before quadprog), on a host copy of the Gram matrix: one device-to-host read per call.
    ``task_weights`` is the weight vector (non-negative, not summing to 1 in general).

    :param num_tasks: number of tasks ``k``.
    :param norm_eps: Gram matrices with trace below this are treated as zero (TorchJD's default).
    :param reg_eps: ridge added to the unit-trace Gram matrix (TorchJD's default).
    """

    #: the registry name, for messages.
    name = "upgrad"

    vmappable = False  # the solver runs on the host, on each member's Gram matrix

    def __init__(self, num_tasks: int, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> None:
        super().__init__(num_tasks)
        self.norm_eps = check_float("norm_eps", norm_eps, min_value=0.0)
        self.reg_eps = check_float("reg_eps", reg_eps, min_value=0.0, strict=True)
        require_modules(self.name, ("torchjd", "qpsolvers", "quadprog"), TORCHJD_QP)
        from torchjd._linalg import QuadprogProjector  # a second and a half of imports: only when used

        self._weighting = self._make_weighting(QuadprogProjector(norm_eps=self.norm_eps, reg_eps=self.reg_eps))

    @staticmethod
    def _make_weighting(projector):
        from torchjd.aggregation import UPGradWeighting

        return UPGradWeighting(projector=projector)

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        return host_weights(self._weighting, gram)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(norm_eps={self.norm_eps:g}, reg_eps={self.reg_eps:g})"
