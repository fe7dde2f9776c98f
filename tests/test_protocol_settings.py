"""The settings the protocols need outside the update (issue 22), each on a hand-computed case:
truncation as done, shared replay indices, action clipping, the warm-up burst, the task one-hot,
reward normalisation and goals through Meta-World's own options, xavier init, and the aggregator
options where the authors' code differs from the paper (PCGrad's shared order, Aligned-MTL's task
sum, Nash-MTL's max_norm meaning, FAMO's released scaling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY
from mtrl_famo.aggregators import make_aggregator
from mtrl_famo.buffer import Batch, ReplayBuffer
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig, BenchmarkConfig
from mtrl_famo.envs import make_envs
from mtrl_famo.networks import Actor, TwinQ
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC
from mtrl_famo.step_rules import ACTION_BOUND, env_actions, stored_terminated, updates_at
from mtrl_famo.train import Trainer

REACH = ["benchmark=mt1", "benchmark.env_name=reach-v3"]


def _trainer(tmp_path, *overrides: str) -> Trainer:
    cfg = compose_config([*TINY, *REACH, f"run_dir={tmp_path / 'run'}", *overrides])
    return Trainer(cfg, out=lambda line: None)


# ---------------------------------------------------------------- truncation as done
@pytest.mark.parametrize("as_done", [False, True])
def test_truncation_as_done_is_what_the_loop_stores(tmp_path, as_done):
    trainer = _trainer(tmp_path, "benchmark.max_episode_steps=5", "train.total_steps=12", "train.warmup_steps=10",
                       f"train.truncation_as_done={str(as_done).lower()}")
    trainer.run()
    stored = trainer.buffer.storage[0, :12, -1].tolist()  # the terminated column, one row per step
    ends = [4, 9]  # the 5th and 10th steps hit the time limit (Meta-World never terminates early here)
    assert stored == [float(as_done and t in ends) for t in range(12)]


def test_a_stored_done_stops_the_bootstrap():
    """With Q = 0 everywhere (online and target critics), the TD target is r where done and
    r - gamma alpha log pi(a'|s') elsewhere; the critic loss (L1 + L2) shows which."""
    torch.manual_seed(0)
    agent = MTSAC(4 + 2, 2, 2, AgentConfig(hidden_sizes=[8]), AGGREGATOR_SCHEMAS["mean"]())
    for net in (agent.critic, agent.critic_target):
        for q in (net.q1, net.q2):
            torch.nn.init.zeros_(q[-1].weight)
            torch.nn.init.zeros_(q[-1].bias)
    g = torch.Generator().manual_seed(1)
    onehot = torch.eye(2)[:, None, :].expand(2, 6, 2)
    obs = torch.cat([torch.rand(2, 6, 4, generator=g), onehot], -1)
    rewards = torch.rand(2, 6, generator=g)
    terminated = torch.tensor([[1.0] * 6, [0.0] * 6])
    metrics = agent.update(Batch(obs, torch.rand(2, 6, 2, generator=g) * 2 - 1, rewards, obs, terminated))
    done_loss = 2 * rewards[0].pow(2).mean()  # target = r: (0 - r)^2 for each of the two critics
    torch.testing.assert_close(metrics["losses/critic"][0], done_loss)
    assert not torch.isclose(metrics["losses/critic"][1], 2 * rewards[1].pow(2).mean())  # bootstrapped


def test_stored_terminated_rule():
    term, trunc = np.array([True, False, False]), np.array([False, True, False])
    assert stored_terminated(term, trunc, False).tolist() == [True, False, False]
    assert stored_terminated(term, trunc, True).tolist() == [True, True, False]


# ---------------------------------------------------------------- shared replay indices
@pytest.mark.parametrize("shared", [False, True])
def test_shared_replay_indices_give_one_time_index_per_row(shared):
    k, steps = 3, 40
    buffer = ReplayBuffer(k, steps, obs_dim=1, act_dim=1, shared_indices=shared)
    for t in range(steps):  # reward = the time index, observation = the task
        buffer.add(np.arange(k, dtype=np.float32)[:, None], np.zeros((k, 1)), np.full(k, t), np.zeros((k, 1)),
                   np.zeros(k, dtype=bool))
    batch = buffer.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(batch.obs[..., 0], torch.arange(k, dtype=torch.float32)[:, None].expand(k, 16))
    same_time = bool((batch.rewards == batch.rewards[0]).all())
    assert same_time == shared
    if not shared:  # the per-task draw is today's stream: randint over [k, b]
        expected = torch.randint(0, steps, (k, 16), generator=torch.Generator().manual_seed(0))
        assert torch.equal(batch.rewards, expected.float())


# ---------------------------------------------------------------- action clipping
def test_clip_actions_to_one_minus_float32_eps():
    assert ACTION_BOUND == 1 - 2.0 ** -23 and np.float32(ACTION_BOUND) < 1.0
    actions = np.array([[1.0, -1.0, 0.25, -0.999]], dtype=np.float32)
    clipped = env_actions(actions, clip=True)
    assert clipped.tolist() == [[np.float32(ACTION_BOUND), -np.float32(ACTION_BOUND), 0.25, np.float32(-0.999)]]
    assert env_actions(actions, clip=False) is actions


def test_clip_actions_reach_the_env_and_the_buffer(tmp_path):
    """A policy whose tanh saturates (mean bias 100) acts exactly +-1 unless clipped."""
    stored = {}
    for clip in (False, True):
        # a few Adam steps (lr 3e-4) leave the bias-100 policy saturated for the steps that act
        trainer = _trainer(tmp_path / str(clip), "train.total_steps=6", "train.warmup_steps=3",
                           f"agent.clip_actions={str(clip).lower()}", "benchmark.max_episode_steps=10")
        with torch.no_grad():
            trainer.agent.actor.net[-1].bias[:4].fill_(100.0)
            trainer.agent.actor.net[-1].weight.zero_()
        trainer.run()
        obs_dim = trainer.buffer.obs_dim
        stored[clip] = trainer.buffer.storage[0, 3:6, obs_dim:obs_dim + 4]  # the actions of the policy steps
    assert torch.all(stored[False] == 1.0)
    assert torch.all(stored[True] == np.float32(ACTION_BOUND))


# ---------------------------------------------------------------- warm-up burst
def test_warmup_burst_is_init_steps_updates_at_once():
    k, init_steps = 10, 1500
    warmup = init_steps * k
    assert updates_at(warmup, warmup, k, 1, burst=True) == init_steps  # mtrl: step == init_steps
    assert updates_at(warmup + k, warmup, k, 1, burst=True) == 1
    assert updates_at(warmup, warmup, k, 1, burst=False) == 1
    assert updates_at(warmup, warmup, k, 2, burst=True) == 2 * init_steps


@pytest.mark.parametrize("burst, updates", [(False, 10), (True, 20 + 9)])
def test_warmup_burst_in_a_run(tmp_path, burst, updates):
    trainer = _trainer(tmp_path, "train.total_steps=30", "train.warmup_steps=20", "benchmark.max_episode_steps=10",
                       f"train.warmup_burst={str(burst).lower()}")
    trainer.run()
    steps = {int(s["step"]) for s in trainer.agent.critic_opt.state.values()}
    assert steps == {updates}  # 20 warm-up steps, then 10 learning steps


# ---------------------------------------------------------------- environment options
@pytest.mark.parametrize("onehot, width", [(True, 40), (False, 39)])
def test_task_onehot_off_leaves_the_task_id_out(onehot, width):
    envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3", task_onehot=onehot), seed=0)
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert obs.shape == (1, width)
    if onehot:
        assert obs[0, -1] == 1.0


def _reach_rewards(seed: int, steps: int, **options) -> np.ndarray:
    envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3", max_episode_steps=steps + 1, **options), seed)
    envs.reset(seed=seed)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 1, 4)).astype(np.float32)
    rewards = np.array([envs.step(a)[1][0] for a in actions])
    envs.close()
    return rewards


def test_reward_normalization_is_meta_worlds_exponential_normaliser():
    raw = _reach_rewards(0, 30)
    normalised = _reach_rewards(0, 30, reward_normalization="exponential")
    mean, var, expected = 0.0, 1.0, []
    for r in raw:  # Meta-World 3's NormalizeRewardsExponential (rate 0.001): two updates a step
        for _ in range(2):
            mean = 0.999 * mean + 0.001 * r
            var = 0.999 * var + 0.001 * (r - mean) ** 2
        expected.append(r / (np.sqrt(var) + 1e-8))
    np.testing.assert_allclose(normalised, expected, rtol=1e-6)
    assert not np.allclose(normalised, raw)


def _goals(num_goals: int, resets: int = 4) -> list[np.ndarray]:
    """The goal (observation entries 36:39) after resets with different seeds, in two env sets of one seed."""
    goals = []
    for _ in range(2):  # training envs and evaluation envs: both built from the run's seed
        envs = make_envs(BenchmarkConfig(name="mt1", env_name="reach-v3", num_goals=num_goals), seed=3)
        goals += [envs.reset(seed=s)[0][0, 36:39].copy() for s in range(resets)]
        envs.close()
    return goals


def test_one_goal_per_task_is_fixed_for_the_run_and_the_evaluation_envs():
    one = _goals(1)
    assert all(np.array_equal(g, one[0]) for g in one)
    many = _goals(50)
    assert len({tuple(g) for g in many[:4]}) > 1  # 50 variants: resets draw different goals


# ---------------------------------------------------------------- xavier init (mtrl)
@pytest.mark.parametrize("multi_head", [False, True])
def test_xavier_init_is_mtrls(multi_head):
    k = 3
    torch.manual_seed(0)
    actor = Actor(10 + k, 4, [64, 64], num_tasks=k, multi_head=multi_head, init="xavier")
    critic = TwinQ(10 + k, 4, [64, 64], num_tasks=k, multi_head=multi_head, init="xavier")
    for net in (actor, critic):
        for layer in [m for m in net.modules() if isinstance(m, torch.nn.Linear)]:
            fan_out = layer.out_features // (k if layer.out_features in (8 * k, k) and multi_head else 1)
            bound = (6 / (layer.in_features + fan_out)) ** 0.5  # xavier_uniform_ per layer (per head)
            assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound
            assert torch.all(layer.bias == 0)


# ---------------------------------------------------------------- aggregator options
def _pcgrad_shared_reference(G: torch.Tensor, permutation: list[int]) -> torch.Tensor:
    """Meta-World+'s PCGrad (optim/pcgrad.py:56-82): every task against every task in one order."""
    projected = []
    for i in range(G.shape[0]):
        g = G[i].clone()
        for j in permutation:
            dot = g @ G[j] / (G[j] @ G[j])
            g = g - min(float(dot), 0.0) * G[j]
        projected.append(g)
    return torch.stack(projected).mean(0)


def test_pcgrad_shared_order_is_meta_world_plus():
    torch.manual_seed(0)
    G = torch.randn(5, 9, dtype=torch.float64)
    agg = make_aggregator("pcgrad", num_tasks=5, seed=3, order="shared")
    (order,) = agg.draws(torch.device("cpu"))
    assert order.shape == (5, 5) and torch.all(order == order[0]) and sorted(order[0].tolist()) == list(range(5))
    torch.testing.assert_close(agg.combine_fn({}, G, order)[0], _pcgrad_shared_reference(G, order[0].tolist()))
    (per_task,) = make_aggregator("pcgrad", num_tasks=5, seed=3).draws(torch.device("cpu"))
    assert per_task.shape == (5, 4)


def test_aligned_mtl_task_sum_is_k_times_the_mean():
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)  # orthogonal: aligned rows e_1, e_2 (min scale 1)
    mean = make_aggregator("alignedmtl", num_tasks=2).combine(G)
    total = make_aggregator("alignedmtl", num_tasks=2, reduction="sum").combine(G)
    torch.testing.assert_close(mean, torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(total, torch.tensor([1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("max_norm, mode, expected", [
    (1.0, "divide", 1.0),                 # FAMO's RL code: a no-op at max_norm 1
    (1.2, "divide", 1 / 1.2),
    (1.2, "clip", 1.2 / 2 ** 0.5),       # the authors': rescaled to norm 1.2
])
def test_nash_mtl_max_norm_meaning(max_norm, mode, expected):
    pytest.importorskip("cvxpy")
    G = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)  # w = 1/|g_i|: direction (1, 1), norm sqrt 2
    agg = make_aggregator("nashmtl", num_tasks=2, max_norm=max_norm, max_norm_mode=mode)
    torch.testing.assert_close(agg.combine(G), torch.full((2,), expected, dtype=torch.float64), rtol=2e-3, atol=0)


@pytest.mark.parametrize("scaling, expected", [("paper", [2 / 3, 1 / 3]), ("released", [0.375, 0.1875])])
def test_famo_released_scaling_multiplies_by_the_normaliser(scaling, expected):
    losses = torch.tensor([1.0, 2.0], requires_grad=True)  # z = (1/2, 1/2): z/l = (1/2, 1/4), sum 3/4
    make_aggregator("famo", num_tasks=2, scaling=scaling).combine_losses(losses).backward()
    torch.testing.assert_close(losses.grad, torch.tensor(expected))
