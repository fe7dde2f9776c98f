"""The MT-SAC actor (tanh-Gaussian policy) and twin Q critic, over the network ``agent.network`` names.

``mlp`` sees the whole observation (the task one-hot last); the task-conditioned networks (FiLM,
CARE, MOORE) get the observation features and the one-hot apart, and a critic's features are
``[action, features]`` as in the Meta-World+ reference (``rl/networks.py:219-222`` at
rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8: ``concatenate((action, state))``
so that the one-hot stays last).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from mtrl_famo.config import LOG_STD_MODES
from mtrl_famo.networks.mlp import make_mlp
from mtrl_famo.networks.registry import make_task_network

# ``tanh`` squashes log std smoothly into its bounds (CleanRL, mtrl), ``clip`` clamps (Meta-World+).


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy with actions in ``[-1, 1]``.

    :param num_tasks: width of the task one-hot at the end of the observation.
    :param multi_head: one output layer per task (:class:`MultiHeadMLP`) instead of one shared.
    :param log_std_mode: ``tanh`` or ``clip`` (see :data:`LOG_STD_MODES`).
    :param init: one of :data:`INIT_SCHEMES`; ``reference`` draws the output layer from
        U(-1e-3, 1e-3) (Meta-World+ reference ``ContinuousActionPolicyTorso``), so the
        initial log std is about 0 (sigma about 1) under ``clip``.
    :param network: ``agent.network``; other than ``mlp``, a task-conditioned network with
        ``network_options`` (:func:`~mtrl_famo.networks.registry.network_options`), always the
        reference's initialisation.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int],
                 log_std_min: float = -5.0, log_std_max: float = 2.0, *, num_tasks: int = 0,
                 multi_head: bool = False, log_std_mode: str = "tanh", init: str = "torch",
                 network: str = "mlp", network_options: dict[str, Any] | None = None):
        super().__init__()
        if log_std_mode not in LOG_STD_MODES:
            raise ValueError(f"log_std_mode={log_std_mode!r}; allowed: {', '.join(LOG_STD_MODES)}")
        self.num_tasks = num_tasks
        self.multi_head = multi_head
        self.network = network
        self.net = make_mlp(obs_dim, hidden_sizes, 2 * act_dim, num_tasks, multi_head, init, output_bound=1e-3) \
            if network == "mlp" else make_task_network(network, obs_dim - num_tasks, 2 * act_dim, num_tasks,
                                                       hidden_sizes, 1e-3, network_options or {})
        self.act_dim = act_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.log_std_mode = log_std_mode

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``. :return: mean and log std, each ``[..., act_dim]``."""
        if self.network != "mlp":
            out = self.net(obs[..., :-self.num_tasks], obs[..., -self.num_tasks:])
        else:
            out = self.net(obs, obs[..., -self.num_tasks:]) if self.multi_head else self.net(obs)
        mean, log_std = out.chunk(2, dim=-1)
        if self.log_std_mode == "clip":
            return mean, log_std.clamp(self.log_std_min, self.log_std_max)
        # Squash into [log_std_min, log_std_max] smoothly (as in CleanRL / SpinningUp / mtrl).
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
    """Two independent Q networks ``Q(s, a)``; SAC uses their minimum against over-estimation.

    :param init: one of :data:`INIT_SCHEMES`; ``reference`` draws the output layers from
        U(-3e-3, 3e-3) (Meta-World+ reference ``QValueFunction``).
    :param network: ``agent.network``, as :class:`Actor`'s.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], *, num_tasks: int = 0,
                 multi_head: bool = False, init: str = "torch", network: str = "mlp",
                 network_options: dict[str, Any] | None = None):
        super().__init__()
        self.num_tasks = num_tasks
        self.multi_head = multi_head
        self.network = network
        if network == "mlp":
            self.q1 = make_mlp(obs_dim + act_dim, hidden_sizes, 1, num_tasks, multi_head, init, output_bound=3e-3)
            self.q2 = make_mlp(obs_dim + act_dim, hidden_sizes, 1, num_tasks, multi_head, init, output_bound=3e-3)
        else:
            self.q1, self.q2 = (make_task_network(network, obs_dim - num_tasks + act_dim, 1, num_tasks, hidden_sizes,
                                                  3e-3, network_options or {}) for _ in range(2))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``; :param action: ``[..., act_dim]``. :return: two ``[...]``."""
        if self.network != "mlp":
            x, task = torch.cat([action, obs[..., :-self.num_tasks]], dim=-1), obs[..., -self.num_tasks:]
            return self.q1(x, task).squeeze(-1), self.q2(x, task).squeeze(-1)
        x = torch.cat([obs, action], dim=-1)
        if self.multi_head:
            task = obs[..., -self.num_tasks:]
            return self.q1(x, task).squeeze(-1), self.q2(x, task).squeeze(-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
