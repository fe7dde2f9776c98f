"""Soft Modularization (``agent.network=soft_modules``; Yang et al. 2020), as the Meta-World+ reference builds it.

rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8 ``nn/soft_modules.py:93-210``
(its ``SoftModularizationNetwork``, the official code's ``ModularGatedCascadeCondNet``), with the
differences from the paper that file lists (``:11-20``, its NOTEs 1-5):

1. observation embedding ``f(x)``: ``in -> 400 (ReLU) -> embedding_dim`` (``:109-116``; the 400 is the
   reference ``MLP``'s default width); task embedding ``z(task) * f(x)`` (``:128-133,154``), then
   ``relu`` and an MLP ``embedding_dim -> width (ReLU) -> width`` (``:134-141,156``, NOTE 1);
2. routing (``RoutingNetworkLayer``, ``:50-90``): layer ``l`` gives ``p_l = softmax(W_d relu(e * W_u
   [p_0, ..., p_{l-1}]))`` (skip connections over all earlier layers, NOTE 3; ``e * ...`` only from the
   second layer on), ``[..., n, n]`` (for each module of the layer, a distribution over the previous
   layer's modules), and ``[..., n]`` for the last (NOTE 5); ``W_d`` ~ U(+-1e-3), zero bias (``:69-74``);
3. base network: ``depth`` layers of ``n`` modules (``module_width``) (``:25-47``), the first fed
   ``relu(f(x))`` (NOTE 2); ``h_{l+1} = relu(p_l @ modules_l(h_l))`` (NOTE 4), the last combined
   ``relu(sum_j p_L[j] modules_L(h_L)[j])`` (``:195-204``), then the output layer.

The reference's MT10 example also weights the tasks' losses (``examples/multi_task/softmodules_mt10.py``
``use_task_weights=True``); that is the update's, not the network's, and is not part of this module.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from mtrl_famo.networks.layers import StackedLinear, reference_linear

#: the reference ``MLP``'s default width, which ``f`` takes (nn/base.py:18; soft_modules.py:109-116 passes none)
F_WIDTH = 400


class SoftModulesNetwork(nn.Module):
    """:param in_dim: observation features (without the one-hot), plus the action for a critic.
    :param widths: unused: the reference sizes Soft Modules by its own options (``width``,
        ``module_width``, ``embedding_dim``), not by ``agent.hidden_sizes``.
    :param head_bound: the output layer ~ U(+-head_bound) (1e-3 policy, 3e-3 Q).
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int], head_bound: float, *,
                 num_modules: int, depth: int, width: int, module_width: int, embedding_dim: int):
        super().__init__()
        n = num_modules
        self.num_modules = n
        self.f = nn.Sequential(reference_linear(in_dim, F_WIDTH), nn.ReLU(), reference_linear(F_WIDTH, embedding_dim))
        self.z = reference_linear(num_tasks, embedding_dim)
        self.task_embedding_fc = nn.Sequential(reference_linear(embedding_dim, width), nn.ReLU(),
                                               reference_linear(width, width))
        # routing layer l: W_u over the earlier layers' probabilities (none for l = 0), W_d to n*n (or n)
        self.prob_embedding = nn.ModuleList([reference_linear(l * n * n, width) for l in range(1, depth)])
        self.prob_output = nn.ModuleList([reference_linear(width, n if l == depth - 1 else n * n)
                                          for l in range(depth)])
        with torch.no_grad():
            for layer in self.prob_output:  # soft_modules.py:69-74: U(-1e-3, 1e-3) kernel, zero bias
                layer.weight.uniform_(-1e-3, 1e-3)
        self.modules_ = nn.ModuleList([StackedLinear(n, embedding_dim if l == 0 else module_width, module_width,
                                                     shared_input=False) for l in range(depth)])
        self.output_head = reference_linear(module_width, out_dim, head_bound)

    def embeddings(self, x: Tensor, task_onehot: Tensor) -> tuple[Tensor, Tensor]:
        """:return: the base network's input ``relu(f(x))`` ``[..., embedding_dim]`` and the routing's task
        embedding ``[..., width]``."""
        obs_embedding = self.f(x)
        task_embedding = self.task_embedding_fc(torch.relu(self.z(task_onehot) * obs_embedding))
        return torch.relu(obs_embedding), task_embedding

    def routing(self, task_embedding: Tensor) -> list[Tensor]:
        """:return: ``p_l`` for each layer: ``[..., n, n]`` (row ``j``: module ``j``'s distribution over the
        previous layer's modules), the last ``[..., n]``."""
        n, probs = self.num_modules, []
        for l, output in enumerate(self.prob_output):
            e = task_embedding
            if l > 0:
                e = e * self.prob_embedding[l - 1](torch.cat([p.flatten(-2) for p in probs], dim=-1))
            logits = output(torch.relu(e))
            probs.append(torch.softmax(logits if l == len(self.prob_output) - 1 else logits.unflatten(-1, (n, n)),
                                       dim=-1))
        return probs

    def forward(self, x: Tensor, task_onehot: Tensor) -> Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        obs_embedding, task_embedding = self.embeddings(x, task_onehot)
        probs = self.routing(task_embedding)
        h = obs_embedding.unsqueeze(-2).expand(*obs_embedding.shape[:-1], self.num_modules, obs_embedding.shape[-1])
        for p, modules in zip(probs[:-1], self.modules_[:-1]):
            h = torch.relu(p @ modules(h))  # [..., n, module_width]
        out = torch.relu((self.modules_[-1](h) * probs[-1].unsqueeze(-1)).sum(-2))
        return self.output_head(out)
