"""``mtrl-famo video``: arguments checked first (run, tasks, camera, OpenGL), then one video per task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from mtrl_famo.config import MAX_FRAME_SIDE, VideoConfig
from mtrl_famo.video import VIDEOS_DIR, VideoError
from mtrl_famo.video.encode import FORMATS, FPS, resolve_format
from mtrl_famo.video.gl import choose_gl_backend
from mtrl_famo.video.render import make_render_env, render_videos
from mtrl_famo.video.tasks import check_tasks


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
  width, height   frame size in pixels (default 480 x 480, at most {MAX_FRAME_SIDE})
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
            if key in ("width", "height") and number > MAX_FRAME_SIDE:
                raise VideoError(f"{key}={number} is too large a frame; allowed: 1 to {MAX_FRAME_SIDE} pixels")
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
    from mtrl_famo.runconfig import check_run_dir, load_checkpointed_config

    run_dir = Path(opts["run_dir"])
    cfg = load_checkpointed_config(run_dir)
    out = Path(opts["out"]) if opts["out"] else run_dir / VIDEOS_DIR
    check_run_dir(out, key="out")  # before any rendering: a file there would fail only at the first write
    fmt = resolve_format(opts["format"])
    choose_gl_backend()  # before `import mujoco`, which reads MUJOCO_GL: fail fast with one line
    from mtrl_famo.envs import benchmark_task_names

    task_names = benchmark_task_names(cfg.benchmark)
    tasks = check_tasks(opts["task"], task_names)
    probe = make_render_env(cfg, task_names, task_names.index(tasks[0]), opts["camera"], opts["width"],
                            opts["height"], training_goals=False)  # checks the camera
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()

    from mtrl_famo.evaluate import load_agent
    from mtrl_famo.runtime import resolve_device

    try:
        device = resolve_device(opts["device"])
    except ValueError as exc:
        raise VideoError(str(exc)) from None
    cfg.run_dir = str(run_dir)  # the folder it is in now, not where it was trained
    agent, step = load_agent(cfg, obs_dim, act_dim, task_names, device)
    print(f"rendering {len(tasks)} task{'s' if len(tasks) != 1 else ''} x {opts['episodes']} episode"
          f"{'s' if opts['episodes'] != 1 else ''} of {run_dir} (step {step:,}) with MUJOCO_GL="
          f"{os.environ.get('MUJOCO_GL')}")
    render_videos(agent, cfg, task_names, tasks, out, step, episodes=opts["episodes"],
                  seed=opts["seed"], camera=opts["camera"], width=opts["width"], height=opts["height"],
                  fps=opts["fps"], fmt=fmt, progress=True)
    return 0
