"""CARE: contextual attention over a mixture of encoders (``agent.network=care``; Sodhani et al. 2021).

As the Meta-World+ reference builds it, rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8
``nn/care.py:11-111``. The paper's context is a language-model embedding of the task description; the
reference (and so this module) learns a task embedding table instead (``:24-35``, its TODO):

1. context ``c = MLP(relu(Embed(task)))`` ``[..., embedding_dim]`` (``encoder_width x encoder_depth``, ``:36-45``);
2. attention ``a = softmax(MLP(c) / encoder_temperature)`` over ``num_experts`` (``:47-63``): it depends
   on the task alone and sums to 1;
3. ``num_experts`` encoder MLPs of the observation, ``[..., num_experts, embedding_dim]`` (``:65-84``),
   mixed by ``a`` (``:86``);
4. torso MLP on ``[mixture, c]`` to the output (``:90-108``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mtrl_famo.networks.layers import TaskEmbedding, reference_mlp, stacked_mlp


class CARENetwork(nn.Module):
    """:param in_dim: observation features (without the one-hot), plus the action for a critic.
    :param widths: the torso's hidden widths (``agent.hidden_sizes``; reference 3 x 400).
    :param head_bound: the output layer ~ U(+-head_bound) (1e-3 policy, 3e-3 Q).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int], head_bound: float, *,
                 num_experts: int, embedding_dim: int, encoder_width: int, encoder_depth: int,
                 encoder_temperature: float):
        super().__init__()
        encoder = [encoder_width] * encoder_depth
        self.temperature = encoder_temperature
        self.task_embedding = TaskEmbedding(num_tasks, embedding_dim)
        self.context = reference_mlp(embedding_dim, encoder, embedding_dim)
        self.attention_logits = reference_mlp(embedding_dim, encoder, num_experts)
        self.experts = stacked_mlp(num_experts, in_dim, encoder, embedding_dim)
        self.torso = reference_mlp(2 * embedding_dim, widths, out_dim, head_bound)

    def context_and_attention(self, task_onehot: Tensor) -> tuple[Tensor, Tensor]:
        """:return: the context ``[..., embedding_dim]`` and the attention over experts ``[..., num_experts]``."""
        context = self.context(torch.relu(self.task_embedding(task_onehot)))
        return context, torch.softmax(self.attention_logits(context) / self.temperature, dim=-1)

    def forward(self, x: Tensor, task_onehot: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        context, attention = self.context_and_attention(task_onehot)
        mixture = torch.einsum("...ne,...n->...e", self.experts(x), attention)
        return self.torso(torch.cat([mixture, context], dim=-1))
