"""The training hook: videos of the current policy every ``video.every`` steps, into ``run_dir/videos/``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from mtrl_famo.video import VIDEOS_DIR
from mtrl_famo.video.gl import choose_gl_backend
from mtrl_famo.video.render import TaskVideo, make_render_env, render_videos
from mtrl_famo.video.tasks import check_tasks

if TYPE_CHECKING:
    from mtrl_famo.config import Config
    from mtrl_famo.sac import MTSAC


class PeriodicVideos:
    """Videos of the current policy every ``cfg.video.every`` steps, into ``run_dir/videos/``.

    Construction checks the tasks, the camera and off-screen OpenGL, so a run that
    cannot film fails before training. Rendering uses environments of its own (with
    the goals of ``envs``, the training envs, when given): the training RNG streams
    are untouched and a run learns the same with or without videos.
    """

    def __init__(self, cfg: "Config", task_names: list[str], run_dir: Path, log: Callable[[str], None] = print,
                 envs=None):
        self.cfg = cfg
        self.task_names = list(task_names)
        self.tasks = check_tasks(cfg.video.tasks, self.task_names, key="video.tasks")
        self.out_dir = Path(run_dir) / VIDEOS_DIR
        self.log = log
        # Each sub-env's RandomTaskSelectWrapper holds the goals it trains on.
        self.goals = dict(zip(self.task_names, envs.get_attr("tasks"))) if envs is not None else None
        choose_gl_backend()  # before any env with a renderer exists in this process
        v = cfg.video
        make_render_env(cfg, self.task_names, self.task_names.index(self.tasks[0]), v.camera, v.width, v.height,
                        training_goals=False).close()  # checks the camera

    def __call__(self, agent: "MTSAC", step: int) -> list[TaskVideo]:
        v = self.cfg.video
        return render_videos(agent, self.cfg, self.task_names, self.tasks, self.out_dir, step, episodes=v.episodes,
                             camera=v.camera, width=v.width, height=v.height, log=self.log, goals=self.goals)


