"""The protocol settings inside the one MT-SAC update (issue 22), on hand-computed cases, and the first
update of ``protocol=metaworld_plus`` against an independent restatement of the reference's update
(docs/protocols.md, "The update of metaworld_plus"), written here with torch.autograd and
torch.optim, not with our update code."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import TINY
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC

K, B, OBS, ACT = 3, 8, 12, 4


def batch(seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    one_hot = torch.eye(K)[:, None, :].expand(K, B, K)
    obs = lambda: torch.cat([torch.randn(K, B, OBS - K, generator=gen), one_hot], -1)  # noqa: E731
    return Batch(obs(), torch.rand(K, B, ACT, generator=gen) * 2 - 1, torch.rand(K, B, generator=gen) * 5, obs(),
                 (torch.rand(K, B, generator=gen) < 0.2).float())


def agent(aggregator: str = "mean", apply_to=("critic", "actor"), **options) -> MTSAC:
    torch.manual_seed(0)
    return MTSAC(OBS, ACT, K, AgentConfig(hidden_sizes=[16, 16], **options),
                 AGGREGATOR_SCHEMAS[aggregator](apply_to=list(apply_to)), immediate_checks=False)


def first_moment(a: MTSAC, name: str) -> torch.Tensor:
    """A network's gradient of its first Adam step, from the first moment: ``exp_avg / (1 - beta1)``."""
    optimizer = getattr(a, f"{name}_opt")
    params = [a.log_alpha] if name == "alpha" else list(getattr(a, name).parameters())
    beta1 = optimizer.param_groups[0]["betas"][0]
    return torch.cat([optimizer.state[p]["exp_avg"].reshape(-1) for p in params]) / (1 - beta1)


def test_critic_loss_mean_over_the_twins_halves_the_loss_and_its_gradient():
    data = batch()
    summed, halved = agent(), agent(critic_loss_reduction="mean")
    metrics_sum, metrics_mean = summed.update(data), halved.update(data)
    torch.testing.assert_close(metrics_mean["losses/critic"], metrics_sum["losses/critic"] / 2)
    torch.testing.assert_close(first_moment(halved, "critic"), first_moment(summed, "critic") / 2)


def test_temperature_loss_mean_over_all_rows_gives_each_log_alpha_one_kth():
    data = batch()
    task_sum, mean = agent(), agent(alpha_loss_reduction="mean")
    task_sum.update(data), mean.update(data)
    torch.testing.assert_close(first_moment(mean, "alpha"), first_moment(task_sum, "alpha") / K)
    assert (first_moment(task_sum, "alpha").abs() > 0).all()


def test_temperature_loss_in_alpha_form_scales_the_gradient_by_alpha():
    """mtrl's ``alpha (-log pi - H)``: d/d log_alpha = alpha (-log pi - H), alpha times the log form's."""
    data = batch()
    log_form, alpha_form = agent(init_alpha=0.3), agent(init_alpha=0.3, alpha_loss_form="alpha")
    m_log, m_alpha = log_form.update(data), alpha_form.update(data)
    torch.testing.assert_close(first_moment(alpha_form, "alpha"), 0.3 * first_moment(log_form, "alpha"))
    # the loss values: alpha * c against log(alpha) * c for the same c = -(mean log pi + H)
    torch.testing.assert_close(m_alpha["losses/alpha"] / 0.3, m_log["losses/alpha"] / math.log(0.3))


def test_the_aggregator_on_alpha_weights_the_temperature_gradient():
    """RLW on the temperatures: each log alpha's gradient is its drawn weight times its task's own."""
    data = batch()
    plain, weighted = agent("rlw"), agent("rlw", apply_to=("critic", "actor", "alpha"))
    plain.update(data)
    metrics = weighted.update(data)
    weights = metrics["aggregator/alpha/weights"]
    assert weights.shape == (K,) and not torch.allclose(weights, torch.full((K,), 1 / K))
    torch.testing.assert_close(first_moment(weighted, "alpha"), weights * first_moment(plain, "alpha"))


# ---------------------------------------------------------------------------- Meta-World+ restated
BOUND = 1 - 2.0**-23  # the reference's action clip


def reference_sample(actor, obs, noise):
    """Reparameterised tanh-Gaussian sample and the unclipped sample's log-probability (MW+
    ``nn/distributions.py``: ``log N(u) - sum log(1 - tanh(u)^2)``, in its stable form)."""
    mean, log_std = actor(obs)
    std = log_std.exp()
    u = mean + std * noise
    log_prob = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
    log_prob = log_prob - (2 * (math.log(2) - u - torch.nn.functional.softplus(-2 * u))).sum(-1)
    return torch.tanh(u), log_prob


@pytest.mark.parametrize("reward_scale", [0.05, 2000.0], ids=["gradients-below-the-clip", "targets-past-the-q-clip"])
def test_first_metaworld_plus_update_equals_the_reference_restated(reward_scale):
    cfg = compose_config([*TINY, "protocol=metaworld_plus", "agent.hidden_sizes=[32,32]"])
    assert (cfg.agent.critic_loss_reduction, cfg.agent.alpha_loss_reduction, cfg.agent.max_q_value,
            cfg.agent.grad_clip, cfg.agent.clip_actions) == ("mean", "mean", 5000.0, 1.0, True)
    torch.manual_seed(0)
    ours = MTSAC(OBS, ACT, K, cfg.agent, cfg.aggregator, immediate_checks=False)
    actor, critic, target = (copy.deepcopy(m) for m in (ours.actor, ours.critic, ours.critic_target))
    log_alpha = ours.log_alpha.detach().clone().requires_grad_(True)
    noise_gen = torch.Generator()
    noise_gen.set_state(ours.generator.get_state())  # the update draws a' noise, then the actor's
    data = batch(1)
    data = data._replace(rewards=data.rewards * reward_scale)
    metrics = ours.update(data)

    a = cfg.agent
    adam = lambda params, lr: torch.optim.Adam(params, lr=lr, eps=a.adam_eps)  # noqa: E731
    critic_opt, actor_opt, alpha_opt = adam(critic.parameters(), a.critic_lr), adam(actor.parameters(), a.actor_lr), \
        adam([log_alpha], a.alpha_lr)
    next_noise = torch.randn(K, B, ACT, generator=noise_gen)
    noise = torch.randn(K, B, ACT, generator=noise_gen)
    alpha = log_alpha.detach().exp()[:, None]  # [k, 1], read once
    # 1-2: target with a' clipped, its log-prob unclipped; y and predictions clipped to +-5000
    with torch.no_grad():
        next_action, next_log_prob = reference_sample(actor, data.next_obs, next_noise)
        q1, q2 = target(data.next_obs, next_action.clamp(-BOUND, BOUND))
        y = data.rewards + (1 - data.terminated) * a.gamma * (torch.min(q1, q2) - alpha * next_log_prob)
        y = y.clamp(-5000, 5000)
    # 3: critic loss (L1 + L2) / 2 over all rows, grad clipped to norm 1, Adam, then Polyak
    q1, q2 = critic(data.obs, data.actions)
    per_task = ((q1.clamp(-5000, 5000) - y) ** 2).mean(-1) / 2 + ((q2.clamp(-5000, 5000) - y) ** 2).mean(-1) / 2
    torch.testing.assert_close(metrics["losses/critic"], per_task.detach())  # [k], each task's (L1 + L2) / 2
    loss = per_task.mean()
    critic_opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
    critic_opt.step()
    # 4: actor loss with the updated critic, the critic seeing the clipped sample; no Q clip
    action, log_prob = reference_sample(actor, data.obs, noise)
    q1, q2 = critic(data.obs, action.clamp(-BOUND, BOUND))
    actor_loss = (alpha * log_prob - torch.min(q1, q2)).mean()
    torch.testing.assert_close(metrics["losses/actor"], (alpha * log_prob - torch.min(q1, q2)).mean(-1).detach())
    actor_opt.zero_grad()
    actor_loss.backward()
    torch.nn.utils.clip_grad_norm_(actor.parameters(), 1.0)
    actor_opt.step()
    # 5: temperature loss, the mean over all k*b rows of -log_alpha_i (log pi + H)
    alpha_loss = (-log_alpha[:, None] * (log_prob.detach() - ACT)).mean()
    alpha_opt.zero_grad()
    alpha_loss.backward()
    alpha_opt.step()
    with torch.no_grad():
        for t, p in zip(target.parameters(), critic.parameters()):
            t.mul_(1 - a.tau).add_(p, alpha=a.tau)

    for mine, theirs, name in ((ours.critic, critic, "critic"), (ours.actor, actor, "actor"),
                               (ours.critic_target, target, "target")):
        for (key, p), q in zip(mine.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=f"{name}.{key}")
    torch.testing.assert_close(ours.log_alpha, log_alpha)
    # Adam's first step is scale-free (lr * g / |g|); its moments are not: they hold the gradients
    for mine, theirs, params, name in ((ours.critic_opt, critic_opt, critic.parameters(), "critic"),
                                       (ours.actor_opt, actor_opt, actor.parameters(), "actor"),
                                       (ours.alpha_opt, alpha_opt, [log_alpha], "alpha")):
        for p_mine, p_theirs in zip(mine.param_groups[0]["params"], params):
            torch.testing.assert_close(mine.state[p_mine]["exp_avg"], theirs.state[p_theirs]["exp_avg"],
                                       rtol=1e-4, atol=1e-7, msg=f"{name} first moment")


def test_temperature_task_weights_scale_each_tasks_losses_by_k_softmax_of_minus_log_alpha():
    """Meta-World+ ``use_task_weights`` (Soft Modules' MT10 example): w = k softmax(-log_alpha), before the
    temperature step, on the critic's and the actor's task losses."""
    data = batch()
    # critic_lr=0: the actor's losses then see the same critic in both agents
    plain, weighted = agent(critic_lr=0.0), agent(critic_lr=0.0, task_loss_weights="temperature")
    for a in (plain, weighted):
        with torch.no_grad():
            a.log_alpha.copy_(torch.tensor([0.0, -1.0, 0.5]))
    w = K * torch.softmax(-torch.tensor([0.0, -1.0, 0.5]), 0)
    m_plain, m_weighted = plain.update(data), weighted.update(data)
    torch.testing.assert_close(m_weighted["losses/critic"], w * m_plain["losses/critic"])
    torch.testing.assert_close(m_weighted["losses/actor"], w * m_plain["losses/actor"])
    torch.testing.assert_close(m_weighted["losses/alpha"], m_plain["losses/alpha"])  # the temperatures' are not
