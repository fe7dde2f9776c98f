"""The task-balanced replay buffer, on synthetic rows and on real Meta-World transitions."""

import numpy as np
import pytest
import torch

from mtrl_famo.buffer import ReplayBuffer
from mtrl_famo.config import BenchmarkConfig
from mtrl_famo.envs import make_envs, true_next_obs


def _rows(k, obs_dim, act_dim, step):
    """Per-task rows whose every entry encodes (task, step) so samples can be traced back."""
    task = np.arange(k, dtype=np.float32)[:, None]
    obs = np.repeat(task * 1000 + step, obs_dim, axis=1)
    actions = np.repeat(task + 0.5, act_dim, axis=1)
    return obs, actions, task[:, 0] * 10 + step, obs + 1, np.zeros(k, dtype=bool)


def test_samples_are_task_balanced_and_contiguous_per_task():
    k, obs_dim, act_dim = 4, 3, 2
    buf = ReplayBuffer(k, capacity_per_task=50, obs_dim=obs_dim, act_dim=act_dim)
    for step in range(30):
        buf.add(*_rows(k, obs_dim, act_dim, step))
    batch = buf.sample(16)
    assert batch.obs.shape == (k, 16, obs_dim) and batch.actions.shape == (k, 16, act_dim)
    assert batch.rewards.shape == (k, 16) and batch.terminated.shape == (k, 16)
    for i in range(k):
        # Every row of partition i belongs to task i, and its fields come from the same transition.
        assert torch.all(batch.obs[i] // 1000 == i)
        assert torch.all(batch.actions[i] == i + 0.5)
        step = batch.obs[i, :, 0] - 1000 * i
        torch.testing.assert_close(batch.rewards[i], i * 10 + step)
        torch.testing.assert_close(batch.next_obs[i], batch.obs[i] + 1)


def test_ring_buffer_overwrites_oldest_and_never_samples_empty_slots():
    buf = ReplayBuffer(2, capacity_per_task=5, obs_dim=1, act_dim=1)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(1)
    for step in range(3):
        buf.add(*_rows(2, 1, 1, step))
    assert buf.size == 3
    assert set(buf.sample(200).obs[0, :, 0].tolist()) == {0.0, 1.0, 2.0}
    for step in range(3, 8):
        buf.add(*_rows(2, 1, 1, step))
    assert buf.size == 5
    assert set(buf.sample(400).obs[0, :, 0].tolist()) == {3.0, 4.0, 5.0, 6.0, 7.0}


def test_state_dict_round_trip_keeps_the_data():
    buf = ReplayBuffer(3, capacity_per_task=10, obs_dim=2, act_dim=1)
    for step in range(4):
        buf.add(*_rows(3, 2, 1, step))
    other = ReplayBuffer(3, capacity_per_task=10, obs_dim=2, act_dim=1)
    other.load_state_dict(buf.state_dict())
    assert (other.pos, other.size) == (4, 4)
    torch.testing.assert_close(other.storage, buf.storage)
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(3, capacity_per_task=20, obs_dim=2, act_dim=1).load_state_dict(buf.state_dict())


def test_real_episode_end_stores_final_observation_and_bootstraps_truncation():
    envs = make_envs(BenchmarkConfig(name="mt10", max_episode_steps=3), seed=0)
    buf = ReplayBuffer(10, capacity_per_task=10, obs_dim=49, act_dim=4)
    try:
        obs, _ = envs.reset(seed=0)
        for _ in range(3):
            actions = envs.action_space.sample()
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            buf.add(obs, actions, rewards, true_next_obs(next_obs, infos), terminated)
            obs = next_obs
        assert truncated.all()
        last = buf.storage[:, 2]
        stored_next = last[:, 49 + 4 + 1:49 + 4 + 1 + 49].numpy()
        np.testing.assert_allclose(stored_next, np.stack(infos["final_obs"]), rtol=1e-6)
        assert not np.allclose(stored_next[:, :18], next_obs[:, :18])  # not the reset observation
        assert torch.all(last[:, -1] == 0.0)  # truncation is not termination
    finally:
        envs.close()


def test_wrong_width_is_a_clear_error():
    buffer = ReplayBuffer(3, 5, obs_dim=4, act_dim=2)
    obs, actions, rewards, next_obs, terminated = _rows(3, 4, 2, 0)
    with pytest.raises(ValueError, match=r"expected 3 transitions of width 12"):
        buffer.add(obs, actions[:, :1], rewards, next_obs, terminated)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_buffer_stages_through_pinned_memory_and_stores_the_same_rows():
    """Many more steps than staging rows: a reused staging row never corrupts a copy in flight."""
    cpu, cuda = ReplayBuffer(3, 50, 4, 2), ReplayBuffer(3, 50, 4, 2, device="cuda")
    assert all(s.is_pinned() for s in cuda._staging)
    for step in range(40):
        rows = _rows(3, 4, 2, step)
        cpu.add(*rows)
        cuda.add(*rows)
    torch.testing.assert_close(cuda.storage.cpu(), cpu.storage, rtol=0, atol=0)
