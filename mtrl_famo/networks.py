"""Networks of MT-SAC: ReLU MLPs, a tanh-Gaussian actor and a twin Q critic.

Both take the full observation, whose last ``num_tasks`` entries are the task
one-hot, so one network serves every task. With ``num_heads = num_tasks`` the
last layer is one output layer per task (multi-head MT-SAC, as in Meta-World+'s
MTMHSAC): the shared trunk still sees the one-hot, every head is applied to
every row and the row's one-hot picks its task's head, so a per-task loss
still depends only on that task's rows (one ``vmap`` gives per-task gradients).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mtrl_famo.config import INIT_SCHEMES, LOG_STD_MODES

# The allowed ``agent.init`` and ``agent.log_std_mode`` values live with the schema that checks them:
# ``torch`` (PyTorch's default Linear init), ``reference`` (Meta-World+ reference: He-uniform hidden
# layers, zero biases, small uniform output layers), ``orthogonal`` (pytorch_sac), ``xavier`` (mtrl:
# ``weight_init_linear``, xavier_uniform weights and zero biases on every Linear layer);
# ``tanh`` squashes log std smoothly into its bounds (CleanRL, mtrl), ``clip`` clamps (Meta-World+).


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


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy with actions in ``[-1, 1]``.

    :param num_tasks: width of the task one-hot at the end of the observation.
    :param multi_head: one output layer per task (:class:`MultiHeadMLP`) instead of one shared.
    :param log_std_mode: ``tanh`` or ``clip`` (see :data:`LOG_STD_MODES`).
    :param init: one of :data:`INIT_SCHEMES`; ``reference`` draws the output layer from
        U(-1e-3, 1e-3) (Meta-World+ reference ``ContinuousActionPolicyTorso``), so the
        initial log std is about 0 (sigma about 1) under ``clip``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int],
                 log_std_min: float = -5.0, log_std_max: float = 2.0, *, num_tasks: int = 0,
                 multi_head: bool = False, log_std_mode: str = "tanh", init: str = "torch"):
        super().__init__()
        if log_std_mode not in LOG_STD_MODES:
            raise ValueError(f"log_std_mode={log_std_mode!r}; allowed: {', '.join(LOG_STD_MODES)}")
        self.num_tasks = num_tasks
        self.multi_head = multi_head
        self.net = make_mlp(obs_dim, hidden_sizes, 2 * act_dim, num_tasks, multi_head, init, output_bound=1e-3)
        self.act_dim = act_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.log_std_mode = log_std_mode

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``. :return: mean and log std, each ``[..., act_dim]``."""
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
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], *, num_tasks: int = 0,
                 multi_head: bool = False, init: str = "torch"):
        super().__init__()
        self.num_tasks = num_tasks
        self.multi_head = multi_head
        self.q1 = make_mlp(obs_dim + act_dim, hidden_sizes, 1, num_tasks, multi_head, init, output_bound=3e-3)
        self.q2 = make_mlp(obs_dim + act_dim, hidden_sizes, 1, num_tasks, multi_head, init, output_bound=3e-3)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param obs: ``[..., obs_dim]``; :param action: ``[..., act_dim]``. :return: two ``[...]``."""
        x = torch.cat([obs, action], dim=-1)
        if self.multi_head:
            task = obs[..., -self.num_tasks:]
            return self.q1(x, task).squeeze(-1), self.q2(x, task).squeeze(-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)
