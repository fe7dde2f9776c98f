"""FiLM-conditioned network (``agent.network=film``; Perez et al. 2018, as the Meta-World+ reference builds it).

rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8 ``nn/film.py:11-102``:

1. task embedding ``e = relu(Embed(task))`` ``[..., embedding_dim]`` (a learned table, ``:27-35``);
2. ``(gamma_l, beta_l)`` for every encoder layer, from ``e`` alone: an MLP ``embedding_dim ->
   encoder_width x encoder_depth -> 2 (encoder_depth + 1)`` (``:37-54``), one scalar scale and one scalar
   shift per layer (``reshape(..., depth + 1, 2, 1)``);
3. observation encoder: ``encoder_depth`` layers ``h = gamma_l relu(W_l h) + beta_l`` of width
   ``encoder_width``, then ``gamma_L (W_L h) + beta_L`` of width ``embedding_dim`` (``:56-79``);
4. torso MLP on ``[encoder output, e]`` to the output (``:81-99``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mtrl_famo.networks.layers import TaskEmbedding, reference_linear, reference_mlp


class FiLMNetwork(nn.Module):
    """:param in_dim: observation features (without the one-hot), plus the action for a critic.
    :param widths: the torso's hidden widths (``agent.hidden_sizes``; reference 3 x 400).
    :param head_bound: the output layer ~ U(+-head_bound) (1e-3 policy, 3e-3 Q).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int], head_bound: float, *,
                 embedding_dim: int, encoder_width: int, encoder_depth: int):
        super().__init__()
        self.encoder_depth = encoder_depth
        self.task_embedding = TaskEmbedding(num_tasks, embedding_dim)
        self.conditioning = reference_mlp(embedding_dim, [encoder_width] * encoder_depth, 2 * (encoder_depth + 1))
        self.encoder = nn.ModuleList(
            [reference_linear(in_dim if i == 0 else encoder_width, encoder_width) for i in range(encoder_depth)]
            + [reference_linear(encoder_width if encoder_depth else in_dim, embedding_dim)])
        self.torso = reference_mlp(2 * embedding_dim, widths, out_dim, head_bound)

    def scale_shift(self, embedding: Tensor) -> Tensor:
        """:param embedding: the task embedding ``[..., embedding_dim]``. :return: ``[..., depth + 1, 2]``,
        ``[..., l, 0]`` layer ``l``'s scale and ``[..., l, 1]`` its shift."""
        return self.conditioning(embedding).unflatten(-1, (self.encoder_depth + 1, 2))

    def forward(self, x: Tensor, task_onehot: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        embedding = torch.relu(self.task_embedding(task_onehot))
        film = self.scale_shift(embedding)
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i < self.encoder_depth:
                x = torch.relu(x)
            x = x * film[..., i, 0:1] + film[..., i, 1:2]
        return self.torso(torch.cat([x, embedding], dim=-1))
