"""Which tasks a video films: names checked against the run's tasks (config validation calls this)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from mtrl_famo.video import VideoError

if TYPE_CHECKING:
    from mtrl_famo.config import Config


def check_tasks(requested: Sequence[str] | None, task_names: Sequence[str], key: str = "task") -> list[str]:
    """The requested tasks (all when ``None``), in the given order.

    :param key: how the user gave them: ``task`` (``mtrl-famo video``) or ``video.tasks`` (config).
    :raises VideoError: naming an unknown task and the run's tasks.
    """
    if not requested:
        return list(task_names)
    for name in requested:
        if name not in task_names:
            given = f"{key}={name!r}" if key == "task" else f"{key} has {name!r}, which"
            raise VideoError(f"{given} is not a task of this run; allowed: {', '.join(task_names)}")
    return list(dict.fromkeys(requested))


def check_video_config(cfg: "Config") -> None:
    """Task names of ``cfg.video`` (called by run validation, ``runconfig.validate_run``; ``config_checks.validate``
    checks the numbers).

    :raises ConfigError: naming the bad value.
    """
    if cfg.video.tasks:
        from mtrl_famo.envs import benchmark_task_names  # imports MuJoCo, which reads MUJOCO_GL: only here

        check_tasks(cfg.video.tasks, benchmark_task_names(cfg.benchmark), key="video.tasks")
