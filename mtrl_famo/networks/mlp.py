"""The MLP networks of MT-SAC (``agent.network=mlp``): shared or multi-head ReLU MLPs.

The actor and critic give these networks the full observation, whose last ``num_tasks`` entries are the task
one-hot, so one network serves every task. With ``num_heads = num_tasks`` the
last layer is one output layer per task (multi-head MT-SAC, as in Meta-World+'s
MTMHSAC): the shared trunk still sees the one-hot, every head is applied to
every row and the row's one-hot picks its task's head, so a per-task loss
still depends only on that task's rows (one ``vmap`` gives per-task gradients).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtrl_famo.config import INIT_SCHEMES

# The allowed ``agent.init`` values live with the schema that checks them:
# ``torch`` (PyTorch's default Linear init), ``reference`` (Meta-World+ reference: He-uniform hidden
# layers, zero biases, small uniform output layers), ``orthogonal`` (pytorch_sac), ``xavier`` (mtrl:
# ``weight_init_linear``, xavier_uniform weights and zero biases on every Linear layer).


class TaskHeads(nn.Module):
    """One ``in_dim -> out_dim`` output layer per task, selected by the task one-hot.

    Parameters: ``weight [num_tasks * out_dim, in_dim]`` and ``bias [num_tasks * out_dim]``,
    i.e. ``num_tasks`` Linear layers stacked into one, so that all heads run as one matmul.
    """

    def __init__(self, in_dim: int, out_dim: int, num_tasks: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, num_tasks * out_dim)
        self.num_tasks = num_tasks
        self.out_dim = out_dim

    def forward(self, features: torch.Tensor, task_onehot: torch.Tensor) -> torch.Tensor:
        """:param features: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        every_head = self.linear(features).unflatten(-1, (self.num_tasks, self.out_dim))  # [..., k, out]
        return torch.einsum("...ko,...k->...o", every_head, task_onehot)


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ``in_dim -> hidden_sizes... -> out_dim`` (no output activation)."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class MultiHeadMLP(nn.Module):
    """ReLU trunk ``in_dim -> hidden_sizes...`` shared by all tasks, then one output layer per task."""

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], out_dim: int, num_tasks: int):
        super().__init__()
        self.trunk = nn.Sequential(*mlp(in_dim, hidden_sizes, 1)[:-1])  # the hidden layers and their ReLUs
        self.head = TaskHeads(hidden_sizes[-1], out_dim, num_tasks)

    def forward(self, x: torch.Tensor, task_onehot: torch.Tensor) -> torch.Tensor:
        """:param x: ``[..., in_dim]``; :param task_onehot: ``[..., num_tasks]``. :return: ``[..., out_dim]``."""
        return self.head(self.trunk(x), task_onehot)


def make_mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int, num_tasks: int, multi_head: bool,
             init: str, output_bound: float) -> nn.Module:
    """A shared (:func:`mlp`) or multi-head (:class:`MultiHeadMLP`) network, initialised by ``init``.

    :param init: one of :data:`INIT_SCHEMES`.
    :param output_bound: ``reference`` init: output weights and biases ~ U(-bound, bound).
    """
    if init not in INIT_SCHEMES:
        raise ValueError(f"init={init!r}; allowed: {', '.join(INIT_SCHEMES)}")
    net = MultiHeadMLP(in_dim, hidden_sizes, out_dim, num_tasks) if multi_head else mlp(in_dim, hidden_sizes, out_dim)
    if init == "torch":
        return net
    if init == "xavier":  # facebookresearch/mtrl@e282c3f mtrl/agent/utils.py:67-71, applied to every Linear
        with torch.no_grad():
            for layer in net.modules():
                if isinstance(layer, nn.Linear):
                    _xavier_uniform_per_head(layer, net.head.num_tasks if isinstance(net, MultiHeadMLP)
                                             and layer is net.head.linear else 1)
                    nn.init.zeros_(layer.bias)
        return net
    *hidden, output = [m for m in net.modules() if isinstance(m, nn.Linear)]  # the output layer comes last
    with torch.no_grad():
        for layer in hidden if init == "reference" else [*hidden, output]:
            if init == "reference":  # jax.nn.initializers.he_uniform: U(-sqrt(6 / fan_in), sqrt(6 / fan_in))
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            else:
                nn.init.orthogonal_(layer.weight)
            nn.init.zeros_(layer.bias)
        if init == "reference":
            nn.init.uniform_(output.weight, -output_bound, output_bound)
            nn.init.uniform_(output.bias, -output_bound, output_bound)
    return net


def _xavier_uniform_per_head(layer: nn.Linear, heads: int) -> None:
    """``xavier_uniform_`` of each of ``heads`` stacked output layers, with its own fan-out (one layer: plain)."""
    for block in layer.weight.chunk(heads, dim=0):
        nn.init.xavier_uniform_(block)
