"""What a training loop does at each step that a protocol decides: the actions it sends, the
done flag it stores, how many updates it makes.

:class:`~mtrl_famo.train.Trainer` and :class:`~mtrl_famo.population.Population` both call
these, so a single run and a population member follow the same rules. Each rule's config key
and source are in ``docs/protocols.md``.
"""

from __future__ import annotations

import numpy as np

#: ``agent.clip_actions``: sampled actions are clipped to ``+-(1 - eps)``, ``eps`` float32's
#: machine epsilon, so that none is exactly +-1 where tanh rounds (Meta-World+ b025cdb
#: ``nn/distributions.py:20-27``).
ACTION_BOUND = 1.0 - float(np.finfo(np.float32).eps)


def env_actions(actions: np.ndarray, clip: bool) -> np.ndarray:
    """The policy's ``[..., act_dim]`` sampled actions as sent to the envs (and stored): clipped to
    ``+-ACTION_BOUND`` when ``clip`` (``agent.clip_actions``), else unchanged."""
    return np.clip(actions, -ACTION_BOUND, ACTION_BOUND) if clip else actions


def stored_terminated(terminated: np.ndarray, truncated: np.ndarray, truncation_as_done: bool) -> np.ndarray:
    """The ``[num_tasks]`` done flags the replay buffer stores (1 stops the TD target's bootstrap).

    :param truncation_as_done: ``train.truncation_as_done``: a time-limit truncation counts as
        done too (Meta-World+ b025cdb ``rl/algorithms/base.py:598``); otherwise only a true
        termination does and the target bootstraps through the time limit.
    """
    return (terminated | truncated) if truncation_as_done else terminated


def updates_at(prev_step: int, warmup: int, num_tasks: int, updates_per_step: int, burst: bool) -> int:
    """Gradient updates in the learning step that follows environment step ``prev_step``.

    With ``burst`` (``train.warmup_burst``), the first learning step (the one whose
    ``prev_step`` is the first at or past ``warmup``) makes the updates the warm-up steps
    would have made, ``prev_step / num_tasks`` vector steps of ``updates_per_step`` each,
    as mtrl's ``init_steps`` updates at ``step == init_steps`` (facebookresearch/mtrl@e282c3f
    ``mtrl/experiment/multitask.py:218-223``); every other step makes ``updates_per_step``.

    :param prev_step: environment steps (over all tasks) before this step, a multiple of ``num_tasks``.
    """
    first = prev_step >= warmup > prev_step - num_tasks
    return (prev_step // num_tasks) * updates_per_step if burst and first else updates_per_step
