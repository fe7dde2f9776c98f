"""Episodes of the deterministic policy rendered to annotated RGB frames, one file per task."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm import tqdm

from mtrl_famo.video import VideoError
from mtrl_famo.video.encode import FPS, VideoFile, resolve_format
from mtrl_famo.video.gl import choose_gl_backend

if TYPE_CHECKING:  # heavy imports stay inside the functions that need them
    from mtrl_famo.config import Config
    from mtrl_famo.sac import MTSAC


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def annotate(frame: np.ndarray, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Draw ``(text, colour)`` lines in a translucent box at the top left of an RGB frame."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img, "RGBA")
    size = max(10, img.height // 26)
    font = _font(size)
    pad, gap = size // 2, size // 4
    boxes = [draw.textbbox((0, 0), text, font=font) for text, _ in lines]
    width = max(b[2] for b in boxes) + 2 * pad
    height = sum(b[3] for b in boxes) + gap * (len(lines) - 1) + 2 * pad
    draw.rectangle((0, 0, width, height), fill=(0, 0, 0, 150))
    y = pad
    for (text, color), box in zip(lines, boxes):
        draw.text((pad, y), text, font=font, fill=color)
        y += box[3] + gap
    return np.asarray(img)


WHITE, GREEN, GREY = (255, 255, 255), (90, 230, 110), (200, 200, 200)


@functools.lru_cache(maxsize=4)
def _benchmark_tasks(benchmark: str, seed: int, num_goals: int = 50) -> dict:
    """The goals (``metaworld.Task``) of each task of MT10/MT50 with this seed, as training uses them."""
    import metaworld

    from mtrl_famo.envs import set_num_goals

    set_num_goals(num_goals)

    from mtrl_famo.benchmark_cache import cached_benchmark

    bench = cached_benchmark({"mt10": metaworld.MT10, "mt50": metaworld.MT50}[benchmark], seed=seed)
    tasks: dict[str, list] = {}
    for task in bench.train_tasks:
        tasks.setdefault(task.env_name, []).append(task)
    return tasks


def make_render_env(cfg: "Config", task_names: list[str], index: int, camera: str, width: int, height: int,
                    goals: list | None = None, training_goals: bool = True):
    """One task's environment as in training (goals, one-hot id ``index`` of ``len(task_names)``), rendering RGB.

    :param goals: the task's ``metaworld.Task`` goals; default: those training drew for MT10/MT50 with
        ``cfg.seed`` (recomputed, a few seconds the first time in a process).
    :param training_goals: ``False`` keeps the goals of ``MT1(task)`` (enough to check the camera).
    :raises VideoError: if ``camera`` is not a camera of the scene.
    """
    import metaworld
    import mujoco

    name = task_names[index]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        from mtrl_famo.benchmark_cache import cached_benchmarks
        from mtrl_famo.envs import set_num_goals

        set_num_goals(cfg.benchmark.num_goals)
        with cached_benchmarks():  # make_mt_envs(name) draws MT1(name)'s goals
            env = metaworld.make_mt_envs(name, seed=cfg.seed, use_one_hot=cfg.benchmark.task_onehot, env_id=index,
                                         num_tasks=len(task_names), max_episode_steps=cfg.benchmark.max_episode_steps,
                                         reward_function_version=cfg.benchmark.reward_version,
                                         render_mode="rgb_array", camera_name=camera, width=width, height=height)
    model = env.unwrapped.model
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
        cameras = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        env.close()
        raise VideoError(f"camera={camera!r} is not a camera of {name}; allowed: {', '.join(cameras)}")
    if goals is None and training_goals and cfg.benchmark.name in ("mt10", "mt50"):
        goals = _benchmark_tasks(cfg.benchmark.name, cfg.seed, cfg.benchmark.num_goals)[name]
    if goals is not None:
        # make_mt_envs(name) draws the goals of MT1(name); training used the benchmark's own goals.
        from metaworld.wrappers import RandomTaskSelectWrapper

        wrapper = env
        while not isinstance(wrapper, RandomTaskSelectWrapper):
            wrapper = wrapper.env
        wrapper.tasks = list(goals)
    return env


def _upside_down(env, camera: str) -> bool:
    """Whether the camera's image "up" points down in the world (Meta-World's corner cameras do)."""
    import mujoco

    model, data = env.unwrapped.model, env.unwrapped.data
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    return bool(data.cam_xmat[cam].reshape(3, 3)[2, 1] < 0)


@dataclass
class Episode:
    steps: int
    success: bool
    success_step: int | None
    episodic_return: float


@dataclass
class TaskVideo:
    """What was written for one task."""

    task: str
    path: Path
    frames: int
    episodes: list[Episode] = field(default_factory=list)

    def line(self) -> str:
        wins = sum(e.success for e in self.episodes)
        lengths = ", ".join(str(e.steps) for e in self.episodes)
        return (f"{self.task}: success {wins}/{len(self.episodes)}, episode steps [{lengths}], "
                f"{self.frames} frames -> {self.path}")


def record_task(agent: "MTSAC", env, task: str, index: int, num_tasks: int, step: int, episodes: int,
                seed: int, camera: str, writer: VideoFile, cfg_max_steps: int,
                on_step: Callable[[], None] | None = None) -> list[Episode]:
    """Run ``episodes`` deterministic episodes of one task and append their annotated frames to ``writer``.

    An episode ends at its first success or when the environment truncates it (at ``cfg_max_steps``).
    """
    max_steps = cfg_max_steps
    results = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        flip = _upside_down(env, camera)
        success_step, total, t = None, 0.0, 0

        def frame() -> np.ndarray:
            img = env.render()
            if flip:
                img = img[::-1, ::-1]
            status = (f"success at step {success_step}", GREEN) if success_step is not None else \
                ("success: not yet" if t < max_steps else "success: no", GREY)
            return annotate(img, [(f"{task}  (task {index + 1}/{num_tasks})", WHITE),
                                  (f"episode {e + 1}/{episodes}  step {t}/{max_steps}  return {total:.1f}", WHITE),
                                  status, (f"policy at training step {step:,}", GREY)])

        writer.append(frame())
        while True:
            action = agent.act(np.asarray(obs, dtype=np.float32)[None], deterministic=True)[0]
            obs, reward, terminated, truncated, info = env.step(action)
            t += 1
            total += float(reward)
            if success_step is None and float(info.get("success", 0.0)) > 0:
                success_step = t
            writer.append(frame())
            if on_step is not None:
                on_step()
            if success_step is not None or terminated or truncated:
                break
        results.append(Episode(steps=t, success=success_step is not None, success_step=success_step,
                               episodic_return=total))
    return results


def render_videos(agent: "MTSAC", cfg: "Config", task_names: list[str], tasks: Sequence[str], out_dir: Path,
                  step: int, episodes: int = 1, seed: int | None = None, camera: str = "corner", width: int = 480,
                  height: int = 480, fps: int = FPS, fmt: str = "auto",
                  log: Callable[[str], None] | None = print, goals: dict | None = None,
                  progress: bool = False) -> list[TaskVideo]:
    """Write ``out_dir/<task>-step<step>.<mp4|gif>`` for each task in ``tasks``.

    :param agent: the policy (its deterministic action is used).
    :param cfg: the run's config (benchmark, episode length, seed).
    :param task_names: the run's tasks in training order (one-hot index = position).
    :param goals: ``{task: [metaworld.Task]}`` as training used them (default: recomputed from the config).
    :param progress: show a bar of rendered steps on stderr (at most ``episodes x max_episode_steps`` per task;
        an episode that succeeds early ends early).
    :raises VideoError: no off-screen OpenGL, an unknown camera, or no encoder for ``fmt``.
    """
    choose_gl_backend()
    fmt = resolve_format(fmt)
    seed = cfg.seed if seed is None else seed
    videos = []
    for task in tasks:
        index = task_names.index(task)
        env = make_render_env(cfg, task_names, index, camera, width, height, (goals or {}).get(task))
        path = Path(out_dir) / f"{task}-step{step}.{fmt}"
        writer = VideoFile(path, fmt, fps)
        try:
            bar = tqdm(total=episodes * cfg.benchmark.max_episode_steps, unit="step", desc=f"rendering {task}",
                       dynamic_ncols=True, mininterval=1.0, leave=False) if progress else None
            try:
                eps = record_task(agent, env, task, index, len(task_names), step, episodes, seed, camera, writer,
                                  cfg.benchmark.max_episode_steps, on_step=bar.update if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        finally:
            env.close()
        videos.append(TaskVideo(task=task, path=path, frames=writer.frames, episodes=eps))
        if log is not None:
            log(videos[-1].line())
    return videos


