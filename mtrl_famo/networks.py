"""Networks of MT-SAC: ReLU MLPs, a tanh-Gaussian actor and a twin Q critic.

Both take the full observation, whose last ``num_tasks`` entries are the task
one-hot, so one network serves every task.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden_sizes: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack ``in_dim -> hidden_sizes... -> out_dim`` (no output activation)."""
    layers: list[nn.Module] = []
    for width in hidden_sizes:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy with actions in ``[-1, 1]``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int],
                 log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, 2 * act_dim)
        self.act_dim = act_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``. :return: mean and log std, each ``[..., act_dim]``."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        # Squash into [log_std_min, log_std_max] smoothly (as in CleanRL / SpinningUp).
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-probability (see :func:`squashed_sample`)."""
        mean, log_std = self(obs)
        return squashed_sample(mean, log_std, torch.randn_like(mean) if noise is None else noise)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action ``tanh(mean)``, ``[..., act_dim]``, for evaluation."""
        return torch.tanh(self(obs)[0])


def squashed_sample(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Action ``tanh(mean + std * noise)`` and its log-probability under the squashed Gaussian.

    :param mean: ``[..., act_dim]``; :param log_std: ``[..., act_dim]``.
    :param noise: standard normal ``[..., act_dim]``, passed in so that the caller owns the
        randomness (a pure function, as ``torch.func.vmap`` needs).
    :return: action ``[..., act_dim]`` in (-1, 1) and log-probability ``[...]``.
    """
    pre_tanh = mean + log_std.exp() * noise
    action = torch.tanh(pre_tanh)
    gaussian_log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log |d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable.
    log_det = (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1)
    return action, gaussian_log_prob - log_det


class TwinQ(nn.Module):
    """Two independent Q networks ``Q(s, a)``; SAC uses their minimum against over-estimation."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, hidden_sizes, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden_sizes, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``; :param action: ``[..., act_dim]``. :return: two ``[...]``."""
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
