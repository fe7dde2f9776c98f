"""MT-SAC updates on a fixed batch of real MT10 transitions, with every aggregator."""

import copy
from pathlib import Path
import math

import pytest
import torch

from mtrl_famo.buffer import Batch, ReplayBuffer
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig, BenchmarkConfig
from mtrl_famo.envs import make_envs, true_next_obs
from mtrl_famo.networks import Actor, squashed_sample
from mtrl_famo.sac import MTSAC, critic_loss_fn
from mtrl_famo.update import polyak_update
from mtrl_famo.stacked_sac import StackedMTSAC

K, OBS_DIM, ACT_DIM = 10, 49, 4


@pytest.fixture(scope="module")
def mt10_batch():
    """A fixed task-grouped batch from 60 random-action steps of real MT10."""
    torch.manual_seed(0)
    envs = make_envs(BenchmarkConfig(name="mt10", max_episode_steps=30), seed=0)
    buf = ReplayBuffer(K, capacity_per_task=100, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    obs, _ = envs.reset(seed=0)
    for _ in range(60):
        actions = envs.action_space.sample()
        next_obs, rewards, terminated, _, infos = envs.step(actions)
        buf.add(obs, actions, rewards, true_next_obs(next_obs, infos), terminated)
        obs = next_obs
    envs.close()
    return buf.sample(16)


def make_agent(aggregator="mean", init_alpha=1.0, **options):
    torch.manual_seed(0)
    cfg = AgentConfig(hidden_sizes=[64, 64], init_alpha=init_alpha)
    agg_cfg = AGGREGATOR_SCHEMAS[aggregator](**options)
    return MTSAC(OBS_DIM, ACT_DIM, K, cfg, agg_cfg)


def test_squashed_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)  # the naive reference loses precision where |pre-tanh| is large
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.3
    noise = torch.randn(5, 3)
    action, log_prob = squashed_sample(mean, log_std, noise)
    base = torch.distributions.Normal(mean, log_std.exp())
    pre = mean + log_std.exp() * noise
    expected = (base.log_prob(pre) - torch.log(1 - torch.tanh(pre) ** 2)).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-4, atol=1e-4)
    assert torch.all(action.abs() < 1)


def test_actor_log_std_stays_in_bounds():
    actor = Actor(6, 2, [16], log_std_min=-5.0, log_std_max=2.0)
    _, log_std = actor(torch.randn(100, 6) * 100)
    assert log_std.min() >= -5.0 and log_std.max() <= 2.0


@pytest.mark.parametrize("aggregator", ["mean", "famo", "pcgrad", "cagrad"])
def test_one_update_gives_finite_per_task_losses(mt10_batch, aggregator):
    agent = make_agent(aggregator)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    metrics = agent.update(mt10_batch, diagnostics=True)
    for key in ("losses/critic", "losses/actor", "losses/alpha", "alpha"):
        assert metrics[key].shape == (K,), key
        assert torch.isfinite(metrics[key]).all(), key
    assert 0 <= metrics["aggregator/critic/conflict_fraction"] <= 1
    assert -1 <= metrics["aggregator/critic/cos_sim_mean"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.actor.parameters()))
    if aggregator == "famo":
        weights = metrics["aggregator/critic/weights"]
        assert weights.shape == (K,) and math.isclose(weights.sum().item(), 1.0, rel_tol=1e-5)


@pytest.mark.parametrize("aggregator", ["mean", "famo", "pcgrad", "cagrad"])
def test_critic_loss_falls_over_repeated_updates_on_a_fixed_batch(mt10_batch, aggregator):
    # A small temperature keeps the entropy bonus (a sampled, high-variance part of the
    # TD target) from dominating, so the regression itself is what is measured.
    agent = make_agent(aggregator, init_alpha=0.01)
    first = agent.update(mt10_batch)["losses/critic"]
    for _ in range(150):
        last = agent.update(mt10_batch)["losses/critic"]
    # The geometric mean over tasks: FAMO minimises the sum of log losses, so it trades the
    # arithmetic mean for balanced relative progress; every aggregator must cut this by half.
    geo_first, geo_last = first.log().mean().exp().item(), last.log().mean().exp().item()
    assert geo_last < 0.5 * geo_first, (geo_first, geo_last)
    assert torch.all(torch.isfinite(last))


def test_temperatures_are_per_task_and_move_toward_target_entropy(mt10_batch):
    agent = make_agent()
    for _ in range(5):
        metrics = agent.update(mt10_batch)
    # A fresh policy has entropy far above -|A|: every task's temperature must fall.
    assert torch.all(metrics["alpha"] < 1.0)
    assert agent.log_alpha.shape == (K,)


def test_mean_aggregator_update_equals_plain_summed_loss_update(mt10_batch):
    """The mean of per-task losses over equal-size task groups is the plain batch-mean loss."""
    agent = make_agent("mean")
    params = dict(agent.critic.named_parameters())
    k, b = mt10_batch.rewards.shape
    target = torch.randn(k, b)
    losses = critic_loss_fn(agent.critic)(params, mt10_batch.obs, mt10_batch.actions, target)
    q1, q2 = agent.critic(mt10_batch.obs.reshape(k * b, -1), mt10_batch.actions.reshape(k * b, -1))
    flat = ((q1 - target.reshape(-1)) ** 2).mean() + ((q2 - target.reshape(-1)) ** 2).mean()
    torch.testing.assert_close(losses.mean(), flat)


def test_polyak_update_moves_each_target_tensor_tau_of_the_way():
    online = [torch.randn(3, 4), torch.randn(5)]
    target = [torch.randn(3, 4), torch.randn(5)]
    expected = [0.99 * t + 0.01 * p for p, t in zip(online, target)]
    polyak_update(online, target, 0.01)
    for t, e in zip(target, expected):
        torch.testing.assert_close(t, e)


def test_checkpoint_of_the_default_adam_resumes_with_fused_adam(mt10_batch):
    """Checkpoints saved before Adam was fused load, and the optimizers stay fused."""
    agent = make_agent("famo")
    state = agent.state_dict()
    old_adam = torch.optim.Adam(agent.critic.parameters(), lr=3e-4)  # the default, as older runs saved it
    sum(q.mean() for q in agent.critic(mt10_batch.obs, mt10_batch.actions)).backward()
    old_adam.step()
    state["critic_opt"] = old_adam.state_dict()
    clone = make_agent("famo")
    clone.load_state_dict(copy.deepcopy(state))
    assert clone.critic_opt.param_groups[0]["fused"] and clone.critic_opt.param_groups[0]["foreach"] is None
    assert all(s["step"].dtype == torch.float32 and s["step"] == 1 for s in clone.critic_opt.state.values())
    clone.update(mt10_batch)
    assert all(s["step"] == 2 for s in clone.critic_opt.state.values())


def test_state_dict_round_trip_reproduces_the_next_update(mt10_batch):
    agent = make_agent("famo")
    agent.update(mt10_batch)
    clone = make_agent("famo")
    # Deep copy: Adam's load_state_dict keeps the very tensors it is given.
    clone.load_state_dict(copy.deepcopy(agent.state_dict()))
    agent.generator.manual_seed(1)  # the update's noise comes from the agent's own stream
    a = agent.update(mt10_batch)
    clone.generator.manual_seed(1)
    b = clone.update(mt10_batch)
    for key in ("losses/critic", "losses/actor", "aggregator/critic/weights"):
        torch.testing.assert_close(a[key], b[key])


FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_d024f2c"


def _fixture_agent(folder: Path, aggregator: str, seed: int = 0) -> tuple[MTSAC, dict]:
    """An agent of the fixtures' configuration (tiny MT10) with the saved agent state loaded."""
    state = torch.load(folder / "checkpoint.pt", weights_only=False)["agent"]
    options = {"apply_to": ["critic"]} if aggregator == "famo" else {"seed": seed}
    agent = MTSAC(49, 4, 10, AgentConfig(hidden_sizes=[32, 32]), AGGREGATOR_SCHEMAS[aggregator](**options),
                  immediate_checks=False)
    agent.load_state_dict(state)
    return agent, state


def _tree_shapes(tree):
    if isinstance(tree, dict):
        return {key: _tree_shapes(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_tree_shapes(value) for value in tree]
    return tuple(tree.shape) if isinstance(tree, torch.Tensor) else type(tree).__name__


def test_checkpoints_written_before_the_one_update_load_update_and_keep_their_format():
    """Issue 21: checkpoints of main at d024f2c (a FAMO run, a PCGrad population of 2) load into
    the one-update agent and population, train on, and save in the same format."""
    generator = torch.Generator().manual_seed(0)
    one_hot = torch.eye(10)[:, None, :].expand(10, 8, 10)

    def batch() -> Batch:
        obs = lambda: torch.cat([torch.rand(10, 8, 39, generator=generator), one_hot], -1)  # noqa: E731
        return Batch(obs(), torch.rand(10, 8, 4, generator=generator) * 2 - 1, torch.rand(10, 8, generator=generator),
                     obs(), torch.zeros(10, 8))

    agent, saved = _fixture_agent(FIXTURES / "single", "famo")
    assert torch.equal(agent.aggregators["critic"].logits.detach(), saved["aggregators"]["critic"]["logits"])
    for _ in range(2):
        metrics = agent.update(batch())
    assert all(torch.isfinite(value).all() for value in metrics.values())
    assert _tree_shapes(agent.state_dict()) == _tree_shapes(saved)
    assert not torch.equal(agent.state_dict()["actor"]["net.0.weight"], saved["actor"]["net.0.weight"])

    members = [_fixture_agent(FIXTURES / "pop" / f"s{seed}", "pcgrad", seed) for seed in (0, 1)]
    population = StackedMTSAC([member for member, _ in members])
    for i, (_, state) in enumerate(members):  # the stacked state is the members' saved state
        torch.testing.assert_close(population.state["params"]["critic"]["q1.0.weight"][i],
                                   state["critic"]["q1.0.weight"], rtol=0, atol=0)
    population.update(Batch(*(torch.stack(field) for field in zip(batch(), batch()))))
    population.write_back()
    for member, state in members:
        assert _tree_shapes(member.state_dict()) == _tree_shapes(state)
        assert member.state_dict()["aggregators"]["critic"]["calls"] == state["aggregators"]["critic"]["calls"] + 1
