"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system, then average."""

from __future__ import annotations

import torch
from torch import Tensor

from .gramian import GramianWeighted, check_choice

SCALE_MODES = ("min", "median", "rmse")
#: ``mean``: the aligned gradients averaged (TorchJD); ``sum``: summed, ``k`` times the mean (the
#: authors' code, SamsungLabs/MTL@3f577f1 ``code/optim/aligned/balancer.py:24``).
REDUCTIONS = ("mean", "sum")


class AlignedMTL(GramianWeighted):
    """Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task
    Learning", Algorithm 1).

    With the Gram matrix ``G G^T = V diag(lambda) V^T`` (``lambda_j = sigma_j^2``, the
    squared singular values of ``G``, kept where ``lambda_j > k eps max(lambda)``), the
    balance transformation ``B = sqrt(s) V diag(lambda^{-1/2}) V^T`` turns ``G`` into
    ``B G = sqrt(s) V U^T``: the aligned gradients, whose singular values all equal
    ``sqrt(s)`` (condition number 1). The direction is ``(B G)^T p = G^T (B p)`` with the
    uniform preference ``p = 1/k``, so ``task_weights`` is ``B p``; ``reduction="sum"`` takes
    ``p = 1`` instead, the sum of the aligned gradients, as the authors' code does. The scale
    ``s`` is the smallest kept eigenvalue (``sigma_min^2``, the paper's Algorithm 1, the
    authors' and TorchJD's default), the median, or the mean (``rmse``); the authors' code
    offers all three (SamsungLabs/MTL@3f577f1 ``code/optim/aligned/solver.py:26-31``).

    Implementation note: TorchJD's ``AlignedMTLWeighting`` does this maths but counts the
    rank with a Python ``sum`` over a tensor and slices by it (a host sync per call and
    data-dependent shapes on a GPU); here the eigenvalues below the tolerance are masked
    instead, so nothing is read back. ``G = 0`` (rank 0) gives ``B = I``: the mean, zero.

    :param num_tasks: number of tasks ``k``.
    :param scale_mode: ``min`` (paper), ``median`` or ``rmse``.
    :param reduction: ``mean`` (TorchJD) or ``sum`` (the authors' code), see :data:`REDUCTIONS`.
    """

    cuda_graph_safe = False  # torch.linalg.eigh syncs on CUDA (pytorch#188355)

    def __init__(self, num_tasks: int, scale_mode: str = "min", reduction: str = "mean") -> None:
        super().__init__(num_tasks)
        self.scale_mode = check_choice("scale_mode", scale_mode, SCALE_MODES)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        weights = aligned_weights(gram, self.scale_mode)
        return weights * self.num_tasks if self.reduction == "sum" else weights

    def __repr__(self) -> str:
        return f"AlignedMTL(scale_mode={self.scale_mode!r}, reduction={self.reduction!r})"


def aligned_weights(gram: Tensor, scale_mode: str = "min") -> Tensor:
    """``B p`` of Aligned-MTL on the device, nothing read back by our code (on CUDA, torch's
    ``eigh`` itself synchronises with the host).

    :param gram: ``[k, k]`` float64. :returns: ``[k]`` float64.
    """
    k = gram.shape[0]
    lam, V = torch.linalg.eigh(gram)  # ascending
    tol = lam.max() * k * torch.finfo(gram.dtype).eps
    keep = lam > tol
    rank = keep.sum()
    inv_sqrt = torch.where(keep, lam.clamp_min(torch.finfo(gram.dtype).tiny).rsqrt(), 0.0)
    if scale_mode == "min":
        scale = torch.where(keep, lam, torch.inf).amin()
    elif scale_mode == "rmse":
        scale = torch.where(keep, lam, 0.0).sum() / rank.clamp_min(1)
    else:  # the lower median of the kept eigenvalues, as torch.median takes it
        descending = lam.flip(0)  # the kept ones come first
        index = (rank - 1 - (rank - 1).div(2, rounding_mode="floor")).clamp_min(0)
        scale = descending.gather(0, index.view(1))[0]
    scale = torch.where(rank > 0, scale, 1.0)
    B = scale.clamp_min(0.0).sqrt() * (V * inv_sqrt) @ V.T
    B = torch.where(rank > 0, B, torch.eye(k, dtype=gram.dtype, device=gram.device))
    return B @ torch.full((k,), 1.0 / k, dtype=gram.dtype, device=gram.device)
