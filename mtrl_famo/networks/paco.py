"""PaCo: parameter-compositional networks (``agent.network=paco``; Sun et al. 2022), as the Meta-World+
reference builds it: rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8 ``nn/paco.py:19-59``.

Every layer holds ``K`` parameter sets ``(W_k, b_k)``; task ``t``'s layer is their composition with the
task's weights ``w_t = Dense(task one-hot)`` ``[K]`` (a learned ``K``-vector per task plus a shared bias,
``:33-38``): ``W_t = sum_k w_tk W_k``, ``b_t = sum_k w_tk b_k``, computed as ``sum_k w_tk (W_k x + b_k)``
(``:40-57``). ReLU between layers, none after the last (whose sets take the output init). The
reference's MTSAC has no PaCo-specific update (no loss mask-out or parameter-set reset: grep of
``rl/algorithms/mtsac.py``), so neither has this one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mtrl_famo.networks.layers import StackedLinear, reference_linear


class PaCoNetwork(nn.Module):
    """:param in_dim: observation features (without the one-hot), plus the action for a critic.
    :param widths: the hidden widths (``agent.hidden_sizes``; reference 3 x 400).
    :param head_bound: the last layer's sets ~ U(+-head_bound) (1e-3 policy, 3e-3 Q).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int], head_bound: float, *,
                 num_parameter_sets: int):
        super().__init__()
        self.task_weights = reference_linear(num_tasks, num_parameter_sets)  # He-uniform, zero bias (:33-38)
        dims = [in_dim, *widths, out_dim]
        self.layers = nn.ModuleList([StackedLinear(num_parameter_sets, i, o, shared_input=True)
                                     for i, o in zip(dims[:-1], dims[1:])])
        with torch.no_grad():
            self.layers[-1].weight.uniform_(-head_bound, head_bound)
            self.layers[-1].bias.uniform_(-head_bound, head_bound)

    def composition(self, task_onehot: Tensor) -> Tensor:
        """:return: the task's weights over the parameter sets, ``[..., K]``."""
        return self.task_weights(task_onehot)

    def forward(self, x: Tensor, task_onehot: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        w = self.composition(task_onehot)
        for i, layer in enumerate(self.layers):
            x = torch.einsum("...kn,...k->...n", layer(x), w)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x
