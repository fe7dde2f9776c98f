"""Videos of the deterministic policy, one file per task, rendered off-screen.

``mtrl-famo video run_dir=DIR [task=NAME] [episodes=1] [out=DIR] [device=cpu]``
loads a run's checkpoint and renders its deterministic policy with MuJoCo's
off-screen renderer (``MUJOCO_GL=egl`` or ``osmesa``), writing one MP4 per task
(GIF where no ffmpeg encoder is present) to ``DIR/videos/`` with the task name,
step and success drawn on every frame. ``video.every`` makes training write the
same videos every N steps.

Episodes are those of Meta-World's evaluation: the policy acts from the task's
one-hot observation (task index = its position in the checkpoint's task list)
and an episode ends at its first success or after ``benchmark.max_episode_steps``
steps. An episode of ``L`` steps gives ``L + 1`` frames (the reset frame and one
per step); a task's file holds its episodes one after another.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from mtrl_famo.atomic import publish
from mtrl_famo.config import ConfigError, VideoConfig

if TYPE_CHECKING:  # heavy imports stay inside the functions that need them
    from mtrl_famo.config import Config
    from mtrl_famo.sac import MTSAC

GL_BACKENDS = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is not set
KNOWN_GL = ("egl", "osmesa", "glfw", "glx")
GL_INSTALL = ("install EGL (Debian: apt-get install libegl1 libgl1) or OSMesa (Debian: apt-get install libosmesa6)")
FPS = 50  # 0.625x real time (Meta-World steps are 12.5 ms); 20 ms is a delay every GIF viewer honours
FORMATS = ("auto", "mp4", "gif")
VIDEOS_DIR = "videos"

# `import mujoco` picks its GLContext class from MUJOCO_GL, as rendering in this process will.
# A warning while making the context (GLFW without a display warns instead of raising) is a failure.
_PROBE = ("import warnings, mujoco; warnings.simplefilter('error'); "
          "c = mujoco.GLContext(16, 16); c.make_current(); c.free()")
_chosen_backend: str | None = None


class VideoError(ConfigError):
    """Bad input to ``mtrl-famo video`` or no off-screen OpenGL; one line, exit code 2."""


# ---------------------------------------------------------------------------------------------- OpenGL
def _probe_backend(backend: str) -> str | None:
    """``None`` if MuJoCo can make an off-screen context with ``backend`` (in a fresh process), else why not."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env.setdefault("PYOPENGL_PLATFORM", backend)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        return "timed out creating a context"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    return reason if len(reason) <= 160 else reason[:157] + "..."


def choose_gl_backend() -> str:
    """Pick MuJoCo's off-screen OpenGL backend and export it as ``MUJOCO_GL`` for this process.

    A ``MUJOCO_GL`` set by the user is respected (and checked); otherwise EGL, then OSMesa.
    Each candidate is tried in a fresh Python process, because a failed OpenGL
    initialisation cannot be undone inside one.

    :raises VideoError: naming the backends tried, why they failed, and what to install.
    """
    global _chosen_backend
    if _chosen_backend is not None:
        return _chosen_backend
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user and user not in KNOWN_GL:
        raise VideoError(f"MUJOCO_GL={user!r} is not a MuJoCo rendering backend; allowed: {', '.join(KNOWN_GL)} "
                         f"(or unset it to try {' then '.join(GL_BACKENDS)})")
    failures = []
    for backend in [user] if user else GL_BACKENDS:
        reason = _probe_backend(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            if backend in ("egl", "osmesa"):
                os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            _chosen_backend = backend
            return backend
        failures.append(f"MUJOCO_GL={backend} ({reason})")
    if user:
        raise VideoError(f"no off-screen OpenGL for rendering: tried {failures[0]}, set in your environment; "
                         f"{GL_INSTALL}, or unset MUJOCO_GL to try {' then '.join(GL_BACKENDS)}")
    raise VideoError(f"no off-screen OpenGL for rendering: tried {'; '.join(failures)}; {GL_INSTALL}")


# ---------------------------------------------------------------------------------------------- encoders
def mp4_available() -> bool:
    """Whether imageio can encode MP4 here (imageio-ffmpeg ships its own ffmpeg binary)."""
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except Exception:  # not installed, or no binary for this platform
        return False


def resolve_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VideoError(f"format={fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "auto":
        return "mp4" if mp4_available() else "gif"
    if fmt == "mp4" and not mp4_available():
        raise VideoError("format=mp4 but no ffmpeg encoder is available (pip install imageio-ffmpeg); "
                         "use format=gif")
    return fmt


class _VideoFile:
    """Frames to ``path`` through a temporary file in the same folder, renamed into place on success."""

    def __init__(self, path: Path, fmt: str, fps: int):
        import tempfile

        self.path, self.fmt, self.fps = path, fmt, fps
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp.{fmt}")
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames = 0
        self._gif_frames: list[np.ndarray] = []
        self._writer = None
        if fmt == "mp4":
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(self.tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                              quality=7, pixelformat="yuv420p", macro_block_size=8,
                                              ffmpeg_log_level="error")

    def append(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._gif_frames.append(frame)
        self.frames += 1

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            import imageio.v3 as iio

            iio.imwrite(self.tmp, np.stack(self._gif_frames), extension=".gif", plugin="pillow",
                        duration=round(1000 / self.fps), loop=0)
        publish(self.tmp, self.path)

    def discard(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the writer may be half-broken; the temp file goes anyway
            pass
        self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- frames
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


# ---------------------------------------------------------------------------------------------- episodes
@functools.lru_cache(maxsize=4)
def _benchmark_tasks(benchmark: str, seed: int) -> dict:
    """The goals (``metaworld.Task``) of each task of MT10/MT50 with this seed, as training uses them."""
    import metaworld

    bench = {"mt10": metaworld.MT10, "mt50": metaworld.MT50}[benchmark](seed=seed)
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
        env = metaworld.make_mt_envs(name, seed=cfg.seed, use_one_hot=True, env_id=index,
                                     num_tasks=len(task_names), max_episode_steps=cfg.benchmark.max_episode_steps,
                                     reward_function_version="v2", render_mode="rgb_array", camera_name=camera,
                                     width=width, height=height)
    model = env.unwrapped.model
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
        cameras = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        env.close()
        raise VideoError(f"camera={camera!r} is not a camera of {name}; allowed: {', '.join(cameras)}")
    if goals is None and training_goals and cfg.benchmark.name in ("mt10", "mt50"):
        goals = _benchmark_tasks(cfg.benchmark.name, cfg.seed)[name]
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
                seed: int, camera: str, writer: _VideoFile, cfg_max_steps: int) -> list[Episode]:
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
            if success_step is not None or terminated or truncated:
                break
        results.append(Episode(steps=t, success=success_step is not None, success_step=success_step,
                               episodic_return=total))
    return results


def render_videos(agent: "MTSAC", cfg: "Config", task_names: list[str], tasks: Sequence[str], out_dir: Path,
                  step: int, episodes: int = 1, seed: int | None = None, camera: str = "corner", width: int = 480,
                  height: int = 480, fps: int = FPS, fmt: str = "auto",
                  log: Callable[[str], None] | None = print, goals: dict | None = None) -> list[TaskVideo]:
    """Write ``out_dir/<task>-step<step>.<mp4|gif>`` for each task in ``tasks``.

    :param agent: the policy (its deterministic action is used).
    :param cfg: the run's config (benchmark, episode length, seed).
    :param task_names: the run's tasks in training order (one-hot index = position).
    :param goals: ``{task: [metaworld.Task]}`` as training used them (default: recomputed from the config).
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
        writer = _VideoFile(path, fmt, fps)
        try:
            eps = record_task(agent, env, task, index, len(task_names), step, episodes, seed, camera, writer,
                              cfg.benchmark.max_episode_steps)
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


# ---------------------------------------------------------------------------------------------- checks
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


def benchmark_task_names(cfg: "Config") -> list[str]:
    """The run's tasks in training order, known from the config alone (without building the envs)."""
    if cfg.benchmark.name == "mt1":
        return [cfg.benchmark.env_name]
    from metaworld.env_dict import MT10_V3, MT50_V3

    return list((MT10_V3 if cfg.benchmark.name == "mt10" else MT50_V3).keys())


def check_video_config(cfg: "Config") -> None:
    """Task names of ``cfg.video`` (called by config validation, which checks its numbers).

    :raises ConfigError: naming the bad value.
    """
    if cfg.video.tasks:
        check_tasks(cfg.video.tasks, benchmark_task_names(cfg), key="video.tasks")


# ---------------------------------------------------------------------------------------------- training hook
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


# ---------------------------------------------------------------------------------------------- CLI
USAGE = ("usage: mtrl-famo video run_dir=DIR [task=NAME|task=[A,B]] [episodes=1] [out=DIR] [device=cpu] "
         "[seed=N] [camera=corner] [width=480] [height=480] [fps=50] [format=auto|mp4|gif]")

HELP = f"""{USAGE}

Renders the deterministic policy of a run's checkpoint off-screen and writes one
video per task to out (default: DIR/videos/), named <task>-step<step>.mp4, with the
task, step, return and success drawn on the frames. An episode ends at its first
success or after benchmark.max_episode_steps steps; it gives steps + 1 frames.

  run_dir   a folder written by `mtrl-famo train` (holds checkpoint.pt)
  task      one task, or a list [A,B] / A,B (default: every task of the run)
  episodes  episodes per task, one after another in the file (default 1)
  out       output folder (default: run_dir/videos)
  device    cpu (default), cuda, cuda:N or auto
  seed      seed of the first episode's reset, +1 per episode (default: the run's seed)
  camera    Meta-World camera: corner (default), corner2, corner3, corner4, topview, behindGripper, gripperPOV
  width, height   frame size in pixels (default 480 x 480)
  fps       frames per second of the file (default {FPS}; Meta-World runs at 80 steps per second)
  format    auto (MP4 when an ffmpeg encoder is present, else GIF), mp4 or gif

Off-screen OpenGL: MUJOCO_GL when set, else EGL then OSMesa
(Debian packages: libegl1 libgl1, or libosmesa6)."""

_INT_OPTIONS = ("episodes", "seed", "width", "height", "fps")
_OPTIONS = ("run_dir", "task", "out", "device", "camera", "format") + _INT_OPTIONS


def parse_args(args: Sequence[str]) -> dict:
    """``key=value`` arguments -> options dict with defaults.

    :raises VideoError: naming the bad argument and what is allowed.
    """
    defaults = VideoConfig()
    opts: dict = {"run_dir": None, "task": None, "episodes": defaults.episodes, "out": None, "device": "cpu",
                  "seed": None, "camera": defaults.camera, "width": defaults.width, "height": defaults.height,
                  "fps": FPS, "format": "auto"}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise VideoError(f"argument {arg!r} is not a key=value option; {USAGE}")
        if key not in _OPTIONS:
            raise VideoError(f"unknown option {key!r}; allowed: {', '.join(_OPTIONS)}")
        if key in _INT_OPTIONS:
            try:
                number = int(value)
            except ValueError:
                number = -1
            low = 0 if key == "seed" else 1
            if number < low:
                raise VideoError(f"{key}={value!r} must be an integer >= {low}")
            opts[key] = number
        elif key == "task":
            names = [n.strip() for n in value.strip().strip("[]").split(",") if n.strip()]
            if not names:
                raise VideoError("task= needs a task name, e.g. task=reach-v3 or task=[reach-v3,push-v3]")
            opts[key] = names
        else:
            opts[key] = value
    if opts["run_dir"] is None:
        raise VideoError("mtrl-famo video needs run_dir=DIR (a folder written by mtrl-famo train)")
    device = opts["device"]
    if not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise VideoError(f"device={device!r}; allowed: auto, cpu, cuda, cuda:N")
    if opts["format"] not in FORMATS:
        raise VideoError(f"format={opts['format']!r}; allowed: {', '.join(FORMATS)}")
    return opts


def main(args: Sequence[str]) -> int:
    """``mtrl-famo video``: input checked first (run, tasks, camera, OpenGL), then one video per task."""
    if any(a in ("-h", "--help", "help") for a in args):
        print(HELP)
        return 0
    opts = parse_args(args)
    from mtrl_famo.runconfig import load_checkpointed_config

    run_dir = Path(opts["run_dir"])
    cfg = load_checkpointed_config(run_dir)
    fmt = resolve_format(opts["format"])
    choose_gl_backend()  # before `import mujoco`, which reads MUJOCO_GL: fail fast with one line
    task_names = benchmark_task_names(cfg)
    tasks = check_tasks(opts["task"], task_names)
    probe = make_render_env(cfg, task_names, task_names.index(tasks[0]), opts["camera"], opts["width"],
                            opts["height"], training_goals=False)  # checks the camera
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()

    from mtrl_famo.train import load_agent, resolve_device

    try:
        device = resolve_device(opts["device"])
    except ValueError as exc:
        raise VideoError(str(exc)) from None
    cfg.run_dir = str(run_dir)  # the folder it is in now, not where it was trained
    agent, step = load_agent(cfg, obs_dim, act_dim, task_names, device)
    out = Path(opts["out"]) if opts["out"] else run_dir / VIDEOS_DIR
    print(f"rendering {len(tasks)} task{'s' if len(tasks) != 1 else ''} x {opts['episodes']} episode"
          f"{'s' if opts['episodes'] != 1 else ''} of {run_dir} (step {step:,}) with MUJOCO_GL="
          f"{os.environ.get('MUJOCO_GL')}")
    render_videos(agent, cfg, task_names, tasks, out, step, episodes=opts["episodes"],
                  seed=opts["seed"], camera=opts["camera"], width=opts["width"], height=opts["height"],
                  fps=opts["fps"], fmt=fmt)
    return 0
