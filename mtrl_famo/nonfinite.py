"""Watch the per-task training metrics for NaN/inf on the device, without a host sync per update.

Checking a loss for NaN with ``bool(torch.isfinite(x).all())`` reads a flag back
from the device: on a GPU the host then waits for every queued kernel, and the
update can no longer overlap with environment stepping. The watch instead keeps,
on the device, the first step at which each (metric, task) was non-finite, and
reads it back only when :meth:`NonFiniteWatch.check` is called: when the loop
logs, evaluates or checkpoints. So a non-finite value is reported with the step
where it first appeared, and never reaches a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

NOT_SEEN = -1


class NonFiniteWatch:
    """First step of NaN/inf per watched metric and task.

    :param keys: metric names to watch (each metric a ``[num_tasks]`` tensor), or a mapping
        from each name to a hint appended to its error message ("" for none).
    :param task_names: the ``num_tasks`` task names, for the error message.
    :param device: where the metrics live.
    """

    def __init__(self, keys: Sequence[str] | Mapping[str, str], task_names: Sequence[str],
                 device: torch.device | str):
        self.hints = dict(keys) if isinstance(keys, Mapping) else dict.fromkeys(keys, "")
        self.keys = list(self.hints)
        self.task_names = list(task_names)
        self.first_step = torch.full((len(self.keys), len(self.task_names)), NOT_SEEN, dtype=torch.int64,
                                     device=device)  # [num_keys, num_tasks]

    def observe(self, metrics: Mapping[str, Tensor], step: int) -> None:
        """Note where the watched ``metrics`` (each ``[num_tasks]``) are non-finite at ``step``; no sync."""
        values = torch.stack([metrics[key].detach() for key in self.keys])  # [num_keys, num_tasks]
        newly_bad = ~torch.isfinite(values) & (self.first_step == NOT_SEEN)
        self.first_step = torch.where(newly_bad, step, self.first_step)

    def check(self) -> None:
        """Raise FloatingPointError naming the first non-finite metric, its step and tasks (one sync)."""
        first_step = self.first_step.cpu()
        if bool((first_step == NOT_SEEN).all()):
            return
        step = int(first_step[first_step != NOT_SEEN].min())
        for key, row in zip(self.keys, first_step):
            tasks = [name for name, s in zip(self.task_names, row.tolist()) if s == step]
            if tasks:
                hint = f" ({self.hints[key]})" if self.hints[key] else ""
                raise FloatingPointError(f"non-finite {key} (NaN or inf) first at step {step} for tasks {tasks}{hint}")
