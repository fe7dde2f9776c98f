"""Layers and initialisers shared by the task-conditioned networks (FiLM, CARE, MOORE).

The Meta-World+ reference (rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8)
initialises every hidden ``Dense`` with ``he_uniform`` and zero biases (``config/nn.py:15,19``), the
output layer of the policy with U(-1e-3, 1e-3) and of each Q network with U(-3e-3, 3e-3), weights and
biases (``rl/networks.py:34,38`` and ``:227-228``), and ``nn.Embed`` tables with flax's default
``variance_scaling(1, fan_in, normal)``, i.e. N(0, 1 / features) for a ``[num_tasks, features]`` table.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


def he_uniform_(weight: Tensor, fan_in: int) -> Tensor:
    """``jax.nn.initializers.he_uniform``: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), in place."""
    bound = math.sqrt(6.0 / fan_in)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def reference_linear(in_dim: int, out_dim: int, head_bound: float | None = None) -> nn.Linear:
    """A Linear layer initialised as the reference's: He-uniform and zero bias, or, as an output
    layer (``head_bound``), weight and bias ~ U(-head_bound, head_bound)."""
    layer = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        if head_bound is None:
            he_uniform_(layer.weight, in_dim)
            layer.bias.zero_()
        else:
            layer.weight.uniform_(-head_bound, head_bound)
            layer.bias.uniform_(-head_bound, head_bound)
    return layer


def reference_mlp(in_dim: int, widths: Sequence[int], out_dim: int, head_bound: float | None = None) -> nn.Sequential:
    """The reference's ``nn/base.py:11-63`` ``MLP``: a ReLU layer per entry of ``widths``, then a linear
    ``out_dim`` layer (He-uniform, or U(+-head_bound) with ``head_bound``)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [reference_linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(reference_linear(in_dim, out_dim, head_bound))
    return nn.Sequential(*layers)


class TaskEmbedding(nn.Module):
    """The reference's ``nn.Embed(num_tasks, dim)`` looked up at the one-hot's task, as ``onehot @ table``
    (the same value for a one-hot, and no integer index under ``vmap``). ``weight`` ``[num_tasks, dim]``,
    ~ N(0, 1 / dim) (flax's default embedding init)."""

    def __init__(self, num_tasks: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tasks, dim) / math.sqrt(dim))

    def forward(self, task_onehot: Tensor) -> Tensor:
        """:param task_onehot: ``[..., num_tasks]``. :return: ``[..., dim]``."""
        return task_onehot @ self.weight


class StackedLinear(nn.Module):
    """``num`` independent ``in_dim -> out_dim`` Linear layers (the reference's ``nn.vmap(Dense)`` over
    experts, each its own He-uniform draw). ``weight`` ``[num, in_dim, out_dim]``, ``bias`` ``[num, out_dim]``.

    :param shared_input: the input is ``[..., in_dim]``, the same for every layer; otherwise
        ``[..., num, in_dim]``, one per layer.
    """

    def __init__(self, num: int, in_dim: int, out_dim: int, shared_input: bool):
        super().__init__()
        self.weight = nn.Parameter(he_uniform_(torch.empty(num, in_dim, out_dim), in_dim))
        self.bias = nn.Parameter(torch.zeros(num, out_dim))
        self.shared_input = shared_input

    def forward(self, x: Tensor) -> Tensor:
        """:return: ``[..., num, out_dim]``."""
        if self.shared_input:
            return torch.einsum("...i,nio->...no", x, self.weight) + self.bias
        return torch.einsum("...ni,nio->...no", x, self.weight) + self.bias


def stacked_mlp(num: int, in_dim: int, widths: Sequence[int], out_dim: int) -> nn.Sequential:
    """``num`` independent :func:`reference_mlp` (He-uniform throughout) on one input: ``[..., in_dim]`` ->
    ``[..., num, out_dim]`` (the reference's ``nn.vmap(MLP, in_axes=None, out_axes=-2)``)."""
    layers: list[nn.Module] = []
    for i, width in enumerate(widths):
        layers += [StackedLinear(num, in_dim, width, shared_input=i == 0), nn.ReLU()]
        in_dim = width
    layers.append(StackedLinear(num, in_dim, out_dim, shared_input=not widths))
    return nn.Sequential(*layers)
