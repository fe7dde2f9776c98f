"""IMTL-G: the update whose projections onto every task gradient's direction are equal."""

from __future__ import annotations

import torch
from torch import Tensor

from .gramian import GramianWeighted


class IMTLG(GramianWeighted):
    """IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning", the gradient part).

    Weights ``w`` summing to 1 such that the direction ``d = G^T w`` has the same projection
    onto every unit task gradient: ``d . g_i / |g_i|`` is equal for all ``i``. With
    ``n_i = |g_i|`` (the square roots of the Gram diagonal) this is
    ``w = pinv(G G^T) n / sum(pinv(G G^T) n)``: TorchJD's ``IMTLGWeighting``, which is
    the closed form of the paper's ``alpha_{2:k} = g_1 U^T (D U^T)^{-1}`` and extends it to
    linearly dependent rows (Quinton and Rey 2024). ``task_weights`` is ``w``; weights may be
    negative, as in the paper.

    Implementation note: the same maths as TorchJD's weighting, written here so that it runs
    on ``G``'s device without reading anything back: TorchJD's tests ``|sum| < 1e-12`` with a
    Python ``if`` (a host sync per call on a GPU); here it is a ``torch.where``. Where the
    sum vanishes (e.g. ``G = 0``) the weights and the direction are zero, as in TorchJD.
    On CUDA, ``pinv(hermitian=True)`` (an ``eigh``) still synchronises with the host inside
    torch 2.13's solver, so a compiled update with IMTL-G is not replayed as a CUDA graph.

    :param num_tasks: number of tasks ``k``.
    """

    cuda_graph_safe = False  # torch.linalg.eigh syncs on CUDA (pytorch#188355)

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        norms = gram.diagonal().clamp_min(0.0).sqrt()
        v = torch.linalg.pinv(gram, hermitian=True) @ norms
        total = v.sum()
        ok = total.abs() >= 1e-12
        return torch.where(ok, v / torch.where(ok, total, 1.0), 0.0)

    def __repr__(self) -> str:
        return "IMTLG()"
