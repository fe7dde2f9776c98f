"""Task-balanced replay buffer: one preallocated float32 partition per task, on the training device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """Replay rows grouped by task, so task ``i``'s rows are ``field[i]``.

    Shapes: ``obs``/``next_obs`` ``[num_tasks, per_task_batch, obs_dim]``,
    ``actions`` ``[num_tasks, per_task_batch, act_dim]``, ``rewards`` and
    ``terminated`` ``[num_tasks, per_task_batch]`` (terminated is 1.0 only for a
    true terminal state; time-limit truncation is 0.0 and gets bootstrapped, unless
    ``train.truncation_as_done`` stores it as 1.0).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """Ring buffer of ``capacity_per_task`` transitions for each of ``num_tasks`` tasks.

    Every vector-env step adds exactly one transition per task (environment ``i``
    is task ``i``), so all partitions fill at the same rate and one write
    pointer serves them all. A step's five arrays travel to the device in one
    copy: on CUDA they are written into one of two pinned (page-locked) host
    staging rows ``[num_tasks, row_dim]`` and copied asynchronously, so the
    loop does not wait for the copy; a staging row is reused only after its
    copy of two steps before has finished (a CUDA event, long done by then).

    :param shared_indices: ``sample`` draws one set of time indices and takes those rows of
        every task's partition (Meta-World+ b025cdb ``rl/buffers.py:359-373``); otherwise
        each task draws its own.
    """

    def __init__(self, num_tasks: int, capacity_per_task: int, obs_dim: int, act_dim: int,
                 device: torch.device | str = "cpu", shared_indices: bool = False):
        self.num_tasks = num_tasks
        self.shared_indices = shared_indices
        self.capacity = capacity_per_task
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.device = torch.device(device)
        # One row = obs | action | reward | next_obs | terminated.
        self.row_dim = 2 * obs_dim + act_dim + 2
        self.storage = torch.zeros((num_tasks, capacity_per_task, self.row_dim), dtype=torch.float32,
                                   device=self.device)
        self.pos = 0
        self.size = 0
        self._pinned = self.device.type == "cuda"
        if self._pinned:
            self._staging = [torch.empty((num_tasks, self.row_dim), dtype=torch.float32, pin_memory=True)
                             for _ in range(2)]
            self._copied: list[torch.cuda.Event | None] = [None, None]
            self._slot = 0

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        """Store one transition per task.

        :param obs: ``[num_tasks, obs_dim]``; :param actions: ``[num_tasks, act_dim]``;
        :param rewards: ``[num_tasks]``; :param next_obs: ``[num_tasks, obs_dim]`` (true final
            observation where an episode ended); :param terminated: ``[num_tasks]`` bool.
        """
        parts = [obs, actions, np.asarray(rewards)[:, None], next_obs, np.asarray(terminated)[:, None]]
        shape = (parts[0].shape[0], sum(p.shape[1] for p in parts))
        if shape != (self.num_tasks, self.row_dim) or any(p.shape[0] != shape[0] for p in parts):
            raise ValueError(f"expected {self.num_tasks} transitions of width {self.row_dim}, "
                             f"got {[tuple(p.shape) for p in parts]}")
        if not self._pinned:
            rows = np.concatenate(parts, axis=1, dtype=np.float32)
            self.storage[:, self.pos] = torch.from_numpy(rows).to(self.device)
        else:
            slot, self._slot = self._slot, 1 - self._slot
            if self._copied[slot] is not None:
                self._copied[slot].synchronize()  # its copy of two steps ago: finished long since
            staging = self._staging[slot]
            np.concatenate(parts, axis=1, out=staging.numpy())
            self.storage[:, self.pos].copy_(staging, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._copied[slot] = event
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, per_task_batch: int, generator: torch.Generator | None = None) -> Batch:
        """``per_task_batch`` rows drawn uniformly (with replacement) from each task's partition
        (with ``shared_indices``, the same time indices in every partition)."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (1 if self.shared_indices else self.num_tasks, per_task_batch),
                            device=self.device, generator=generator).expand(self.num_tasks, -1)
        rows = torch.gather(self.storage, 1, idx[..., None].expand(-1, -1, self.row_dim))
        o, a = self.obs_dim, self.act_dim
        return Batch(
            obs=rows[..., :o],
            actions=rows[..., o:o + a],
            rewards=rows[..., o + a],
            next_obs=rows[..., o + a + 1:2 * o + a + 1],
            terminated=rows[..., -1],
        )

    def state_dict(self) -> dict:
        """Filled rows only, on the CPU, so a checkpoint's size grows with the data."""
        # A copy: on a CPU, .cpu() of the slice is a view (and with one task already contiguous), and
        # torch.save writes a view's whole underlying storage, every preallocated row.
        filled = self.storage[:, :self.size].to("cpu", copy=True, memory_format=torch.contiguous_format)
        return {"storage": filled, "pos": self.pos, "size": self.size,
                "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or state["storage"].shape[::2] != self.storage.shape[::2]:
            raise ValueError(
                f"checkpointed buffer {tuple(state['storage'].shape)} (capacity {state['capacity']}) does not fit "
                f"this buffer {tuple(self.storage.shape)}"
            )
        self.storage[:, :state["size"]] = state["storage"].to(self.device)
        self.pos, self.size = state["pos"], state["size"]
