"""MOORE: a mixture of orthogonal experts (``agent.network=moore``; Hendawy et al. 2024).

As the Meta-World+ reference builds it, rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8
``nn/moore.py:31-93``:

1. task weights ``w = W task`` ``[..., num_experts]``, a linear map of the one-hot without bias (``:45-50``);
2. ``num_experts`` expert MLPs of the observation (hidden ReLU layers, a linear last layer of the last
   width, ``:52-69``), ``[..., num_experts, width]``;
3. Gram-Schmidt across the experts of each sample, so that the expert representations are
   orthonormal per sample (``orthogonal_1d``, ``:12-28``, with its ``1e-8`` in each norm);
4. ``tanh(sum_n w_n u_n)`` (``:71-72``), then one output layer per task, the row's task picking its
   head (``:75-91``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mtrl_famo.networks.layers import he_uniform_, stacked_mlp
from mtrl_famo.networks.mlp import TaskHeads


def gram_schmidt(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Orthonormalise the rows of each ``[num_experts, dim]`` slice of ``x`` ``[..., num_experts, dim]`` in
    order, as the reference's ``orthogonal_1d``: row ``i`` minus its projection on the rows before,
    divided by its norm (``+ eps``)."""
    basis = [x[..., 0, :] / (torch.linalg.vector_norm(x[..., 0, :], dim=-1, keepdim=True) + eps)]
    for i in range(1, x.shape[-2]):
        v = x[..., i, :]
        prior = torch.stack(basis, dim=-2)  # [..., i, dim]
        w = v - torch.einsum("...j,...jd->...d", torch.einsum("...d,...jd->...j", v, prior), prior)
        basis.append(w / (torch.linalg.vector_norm(w, dim=-1, keepdim=True) + eps))
    return torch.stack(basis, dim=-2)


class MOORENetwork(nn.Module):
    """:param in_dim: observation features (without the one-hot), plus the action for a critic.
    :param widths: the experts' widths (``agent.hidden_sizes``; reference 3 x 400: two ReLU layers and a
        linear 400-wide last layer, ``depth - 1`` hidden and ``head_dim = width``).
    :param head_bound: the task heads ~ U(+-head_bound) (1e-3 policy, 3e-3 Q).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int], head_bound: float, *,
                 num_experts: int):
        super().__init__()
        self.task_weights = nn.Parameter(he_uniform_(torch.empty(num_tasks, num_experts), num_tasks))
        self.experts = stacked_mlp(num_experts, in_dim, list(widths[:-1]), widths[-1])
        self.head = TaskHeads(widths[-1], out_dim, num_tasks)
        with torch.no_grad():
            self.head.linear.weight.uniform_(-head_bound, head_bound)
            self.head.linear.bias.uniform_(-head_bound, head_bound)

    def expert_representations(self, x: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``. :return: the orthonormalised experts' outputs ``[..., num_experts, width]``."""
        return gram_schmidt(self.experts(x))

    def forward(self, x: Tensor, task_onehot: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        weights = task_onehot @ self.task_weights  # [..., num_experts]
        features = torch.tanh(torch.einsum("...nd,...n->...d", self.expert_representations(x), weights))
        return self.head(features, task_onehot)
