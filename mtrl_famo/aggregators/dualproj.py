"""DualProj: the mean gradient projected onto the dual cone of the task gradients (TorchJD)."""

from __future__ import annotations

from .upgrad import UPGrad


class DualProj(UPGrad):
    """DualProj (TorchJD; the projection of Lopez-Paz and Ranzato 2017, "Gradient Episodic
    Memory for Continual Learning", Eq. 11, applied to the mean gradient).

    The mean of the rows is projected onto the dual cone ``{x : G x >= 0}``: the closest
    direction to the mean that conflicts with no task (non-negative inner product with every
    row). One quadratic program on the Gram matrix, ``v = argmin v^T G G^T v`` subject to
    ``v >= 1/k``; the direction is ``G^T v``.

    Uses TorchJD's ``DualProjWeighting`` with its ``QuadprogProjector`` (the Gram matrix is
    scaled to unit trace, ``0`` below ``norm_eps``, and ``reg_eps`` is added to its diagonal
    before quadprog), on a host copy of the Gram matrix: one device-to-host read per call.
    ``task_weights`` is ``v`` (every entry ``>= 1/k``).

    :param num_tasks: number of tasks ``k``.
    :param norm_eps: Gram matrices with trace below this are treated as zero (TorchJD's default).
    :param reg_eps: ridge added to the unit-trace Gram matrix (TorchJD's default).
    """

    name = "dualproj"

    @staticmethod
    def _make_weighting(projector):
        from torchjd.aggregation import DualProjWeighting

        return DualProjWeighting(projector=projector)
