"""Tests of the per-task gradient machinery: vmap(grad) against k separate backward passes."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mtrl_famo.aggregators import (
    assign_flat_grad,
    flatten_grads,
    gradient_diagnostics,
    make_aggregator,
    per_task_gradients,
    per_task_gradients_loop,
)

OBS_DIM, ACT_DIM, HIDDEN = 6, 2, 16


def mlp(in_dim: int, out_dim: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, out_dim)
    ).to(dtype)


def critic_batch(k: int, b: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    """obs [k, b, OBS_DIM], act [k, b, ACT_DIM], target [k, b]."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(k, b, OBS_DIM, generator=gen, dtype=dtype),
        torch.randn(k, b, ACT_DIM, generator=gen, dtype=dtype),
        torch.randn(k, b, generator=gen, dtype=dtype),
    )


def make_critic_loss(critic: nn.Module):
    def critic_loss(params, obs, act, target):  # [b, OBS_DIM], [b, ACT_DIM], [b]
        q = functional_call(critic, params, (torch.cat([obs, act], dim=-1),)).squeeze(-1)
        return 0.5 * ((q - target) ** 2).mean()

    return critic_loss


def assert_same_gradients(module, loss_fn, args, params=None, rtol=1e-5, atol=1e-6) -> torch.Tensor:
    G, layout = per_task_gradients(module, loss_fn, args, params)
    G_loop, layout_loop = per_task_gradients_loop(module, loss_fn, args, params)
    assert layout == layout_loop
    assert G.shape == (args[0].shape[0], sum(math.prod(shape) for _, shape in layout))
    assert not G.requires_grad
    torch.testing.assert_close(G, G_loop, rtol=rtol, atol=atol)
    G_again, _, losses = per_task_gradients(module, loss_fn, args, params, return_losses=True)
    _, _, losses_loop = per_task_gradients_loop(module, loss_fn, args, params, return_losses=True)
    assert torch.equal(G_again, G) and losses.shape == (args[0].shape[0],) and not losses.requires_grad
    torch.testing.assert_close(losses, losses_loop, rtol=rtol, atol=atol)
    return G


@pytest.mark.parametrize("k", [3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_critic_like_loss_matches_the_loop(k: int, dtype: torch.dtype) -> None:
    torch.manual_seed(k)
    critic = mlp(OBS_DIM + ACT_DIM, 1, dtype)
    args = critic_batch(k, 8, dtype, seed=k)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    G = assert_same_gradients(critic, make_critic_loss(critic), args, **tol)
    # the layout follows named_parameters(); the mean row is the gradient of the mean loss
    names = [name for name, _ in critic.named_parameters()]
    assert [name for name, _ in per_task_gradients(critic, make_critic_loss(critic), args)[1]] == names
    params = dict(critic.named_parameters())
    loss = torch.stack([make_critic_loss(critic)(params, *(a[i] for a in args)) for i in range(k)])
    critic.zero_grad()
    loss.mean().backward()
    torch.testing.assert_close(G.mean(0), flatten_grads(critic), **tol)


def test_actor_like_loss_with_external_noise_matches_the_loop() -> None:
    torch.manual_seed(0)
    k, b = 4, 8
    actor = mlp(OBS_DIM, 2 * ACT_DIM)
    critic = mlp(OBS_DIM + ACT_DIM, 1)
    log_alpha = torch.log(torch.linspace(0.05, 0.2, k))  # one temperature per task
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(k, b, OBS_DIM, generator=gen)
    noise = torch.randn(k, b, ACT_DIM, generator=gen)  # sampled outside: vmap forbids randomness inside

    def actor_loss(params, obs, noise, log_alpha):  # [b, OBS_DIM], [b, ACT_DIM], []
        mean, log_std = functional_call(actor, params, (obs,)).chunk(2, dim=-1)
        log_std = log_std.clamp(-5, 2)
        pre_tanh = mean + log_std.exp() * noise
        action = torch.tanh(pre_tanh)
        log_prob = (-0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log1p(-action.pow(2) + 1e-6).sum(-1)
        q = critic(torch.cat([obs, action], dim=-1)).squeeze(-1)  # an ordinary module: a constant here
        return (log_alpha.exp() * log_prob - q).mean()

    G = assert_same_gradients(actor, actor_loss, (obs, noise, log_alpha))
    assert G.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())  # the critic is not touched


def test_randomness_inside_the_loss_is_refused() -> None:
    critic = mlp(OBS_DIM + ACT_DIM, 1)

    def noisy_loss(params, obs, act, target):
        return make_critic_loss(critic)(params, obs + torch.randn_like(obs), act, target)

    with pytest.raises(RuntimeError, match="random"):
        per_task_gradients(critic, noisy_loss, critic_batch(3, 4))


class CriticWithUnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(OBS_DIM + ACT_DIM, 1)
        self.unused = nn.Linear(3, 3)  # registered after net, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_parameter_subset_and_unused_parameters() -> None:
    torch.manual_seed(0)
    critic = CriticWithUnusedLayer()
    args = critic_batch(3, 5)
    G = assert_same_gradients(critic, make_critic_loss(critic), args)
    assert G.shape[1] == sum(p.numel() for p in critic.parameters())
    assert G[:, -12:].abs().sum() == 0  # the unused layer's 3x3 weight and 3 biases get zeros
    last = {name: p for name, p in critic.named_parameters() if name.startswith("net.4.")}
    G_last = assert_same_gradients(critic, make_critic_loss(critic), args, params=last)
    start = sum(p.numel() for name, p in critic.named_parameters() if name.startswith(("net.0.", "net.2.")))
    torch.testing.assert_close(G_last, G[:, start : start + G_last.shape[1]])


def test_frozen_parameters_are_left_out() -> None:
    critic = mlp(OBS_DIM + ACT_DIM, 1)
    critic[0].requires_grad_(False)
    G, layout = per_task_gradients(critic, make_critic_loss(critic), critic_batch(3, 4))
    assert [name for name, _ in layout] == ["2.weight", "2.bias", "4.weight", "4.bias"]
    assert G.shape[1] == sum(p.numel() for p in critic.parameters() if p.requires_grad)


def test_aggregated_direction_drives_the_optimizer() -> None:
    torch.manual_seed(0)
    critic = mlp(OBS_DIM + ACT_DIM, 1)
    G, _ = per_task_gradients(critic, make_critic_loss(critic), critic_batch(4, 6))
    direction = make_aggregator("cagrad", 4, c=0.5).combine(G)
    before = torch.cat([p.detach().reshape(-1) for p in critic.parameters()])
    for p in critic.parameters():
        p.grad = torch.full_like(p, 123.0)
    buffers = [p.grad for p in critic.parameters()]
    assign_flat_grad(critic, direction)  # overwrites the existing .grad buffers in place
    assert all(p.grad is buf for p, buf in zip(critic.parameters(), buffers))
    torch.testing.assert_close(flatten_grads(critic), direction)
    torch.optim.SGD(critic.parameters(), lr=0.1).step()
    after = torch.cat([p.detach().reshape(-1) for p in critic.parameters()])
    torch.testing.assert_close(after, before - 0.1 * direction)


def test_flat_grad_helpers() -> None:
    layer = nn.Linear(3, 2)
    assert torch.equal(flatten_grads(layer), torch.zeros(8))  # no grads yet: zeros
    flat = torch.arange(8.0)
    assign_flat_grad(dict(layer.named_parameters()), flat)
    assert torch.equal(layer.weight.grad, flat[:6].view(2, 3)) and torch.equal(layer.bias.grad, flat[6:])
    assert torch.equal(flatten_grads(list(layer.parameters())), flat)
    flat.zero_()
    assert layer.weight.grad.abs().sum() > 0  # the grads are copies, not views of flat
    with pytest.raises(ValueError, match=re.escape("expected flat of shape [num_params=8], got (7,)")):
        assign_flat_grad(layer, torch.zeros(7))


def test_gradient_diagnostics_on_hand_made_matrices() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # pairs: (0, 1) cos 0; (0, 2) cos -1, conflicting; (1, 2) cos 0
    stats = gradient_diagnostics(G)
    assert stats["cos_sim_mean"] == pytest.approx(-1 / 3)
    assert stats["conflict_fraction"] == pytest.approx(1 / 3)
    assert gradient_diagnostics(torch.tensor([[1.0, 1.0], [2.0, 2.0]])) == pytest.approx(
        {"cos_sim_mean": 1.0, "conflict_fraction": 0.0}
    )
    assert gradient_diagnostics(torch.randn(1, 5)) == {"cos_sim_mean": 1.0, "conflict_fraction": 0.0}
    stats = gradient_diagnostics(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # a zero gradient: cos 0
    assert stats == {"cos_sim_mean": 0.0, "conflict_fraction": 0.0}
    assert all(isinstance(v, float) for v in stats.values())


def test_bad_task_arguments() -> None:
    critic = mlp(OBS_DIM + ACT_DIM, 1)
    obs, act, target = critic_batch(3, 4)
    for fn in (per_task_gradients, per_task_gradients_loop):
        with pytest.raises(ValueError, match=re.escape("got shapes (3, 4, 6), (2, 4, 2), (3, 4)")):
            fn(critic, make_critic_loss(critic), (obs, act[:2], target))
        with pytest.raises(ValueError, match="empty"):
            fn(critic, make_critic_loss(critic), ())
        with pytest.raises(ValueError, match=re.escape("task_batched_args[1] must be a tensor")):
            fn(critic, make_critic_loss(critic), (obs, [1.0], target))
    with pytest.raises(ValueError, match="expected G of shape"):
        gradient_diagnostics(torch.ones(3))
