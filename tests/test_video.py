"""`mtrl-famo video` and `video.every` on a real tiny MT10 run, rendered off-screen (EGL or OSMesa)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import TINY, TINY_RUN, assert_usage_error, run_cli
from mtrl_famo import video
from mtrl_famo.video import command, encode, gl, render
from mtrl_famo.config import ConfigError
from mtrl_famo.runconfig import compose_config

MAX_STEPS = 50  # benchmark.max_episode_steps in TINY


def _gl_failures() -> list[str]:
    """Why each off-screen backend cannot be used here (empty when one works)."""
    candidates = [os.environ["MUJOCO_GL"]] if os.environ.get("MUJOCO_GL") else list(gl.GL_BACKENDS)
    failures = []
    for backend in candidates:
        reason = gl.probe_backend(backend)
        if reason is None:
            return []
        failures.append(f"MUJOCO_GL={backend}: {reason}")
    return failures


_FAILURES = _gl_failures()
needs_gl = pytest.mark.skipif(bool(_FAILURES), reason="no off-screen OpenGL for MuJoCo here (install Debian's "
                                                      "libegl1 libgl1 or libosmesa6): " + "; ".join(_FAILURES))

LINE = re.compile(r"^(?P<task>[\w-]+): success (?P<wins>\d+)/(?P<n>\d+), episode steps \[(?P<steps>[\d, ]+)\], "
                  r"(?P<frames>\d+) frames -> (?P<path>.+)$", re.M)


def mp4_frames(path: Path) -> int:
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return sum(1 for _ in reader)


def check_episodes(match: re.Match) -> list[int]:
    """Episode lengths as printed: an episode ends at its first success, else exactly at the time limit."""
    steps = [int(s) for s in match["steps"].split(",")]
    assert len(steps) == int(match["n"])
    assert all(1 <= s <= MAX_STEPS for s in steps)
    if int(match["wins"]) == 0:
        assert steps == [MAX_STEPS] * len(steps)
    else:
        assert sum(s < MAX_STEPS for s in steps) <= int(match["wins"])
    return steps


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny MT10 run that filmed reach-v3 at steps 500 and 1000 during training (video.every)."""
    if _FAILURES:
        pytest.skip("no off-screen OpenGL: " + "; ".join(_FAILURES))
    run_dir = tmp_path_factory.mktemp("video_runs") / "mt10-mean"
    proc = run_cli("train", *TINY_RUN, "video.every=500",
                   "video.tasks=[reach-v3]", "video.width=160", "video.height=128", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc.stdout


@needs_gl
def test_training_writes_periodic_videos(video_run):
    run_dir, stdout = video_run
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert videos == ["reach-v3-step1000.mp4", "reach-v3-step500.mp4"]  # video.tasks, every video.every steps
    matches = list(LINE.finditer(stdout))
    assert [Path(m["path"]).name for m in matches] == ["reach-v3-step500.mp4", "reach-v3-step1000.mp4"]
    for match in matches:
        steps = check_episodes(match)
        assert mp4_frames(Path(match["path"])) == int(match["frames"]) == steps[0] + 1


@needs_gl
def test_filming_leaves_training_unchanged(video_run, tiny_mt10_run):
    """The same run without videos (conftest's tiny run: same seed and budget) learns exactly the same."""
    run_dir, _ = video_run
    assert (run_dir / "evals.jsonl").read_text() == (tiny_mt10_run / "evals.jsonl").read_text()
    filmed = torch.load(run_dir / "checkpoint.pt", weights_only=False)["agent"]["actor"]
    plain = torch.load(tiny_mt10_run / "checkpoint.pt", weights_only=False)["agent"]["actor"]
    assert all(torch.equal(filmed[k], plain[k]) for k in plain)


@needs_gl
def test_video_writes_a_playable_mp4_with_one_frame_per_step(video_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(video_run[0], run_dir, ignore=shutil.ignore_patterns("tb", "videos"))
    proc = run_cli("video", f"run_dir={run_dir}", "task=drawer-close-v3", "episodes=2", "width=160", "height=128")
    assert proc.returncode == 0, proc.stderr
    (match,) = LINE.finditer(proc.stdout)
    assert match["task"] == "drawer-close-v3"
    steps = check_episodes(match)
    path = run_dir / "videos" / "drawer-close-v3-step1000.mp4"  # default folder: run_dir/videos
    assert Path(match["path"]) == path
    # Each episode: the reset frame plus one frame per step, episodes back to back.
    assert int(match["frames"]) == mp4_frames(path) == sum(s + 1 for s in steps)
    with imageio.get_reader(path, format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == encode.FPS
        first = reader.get_data(0)
    assert first.shape == (128, 160, 3) and first.std() > 10  # a rendered scene, not a blank frame
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_gif_fallback_and_atomic_write(tmp_path):
    frames = [render.annotate(np.full((64, 80, 3), 40 * i, np.uint8), [(f"step {i}", render.WHITE)]) for i in range(5)]
    path = tmp_path / "v" / "clip.gif"
    writer = encode.VideoFile(path, "gif", fps=encode.FPS)
    for frame in frames:
        writer.append(frame)
    assert not path.exists()  # only the temporary file until commit
    writer.commit()
    assert iio.imread(path, index=None).shape == (5, 64, 80, 3)
    assert [p.name for p in path.parent.iterdir()] == ["clip.gif"]
    broken = encode.VideoFile(tmp_path / "v" / "broken.mp4", "mp4", fps=encode.FPS)
    broken.append(frames[0])
    broken.discard()  # an interrupted video leaves nothing behind
    assert [p.name for p in path.parent.iterdir()] == ["clip.gif"]
    assert encode.resolve_format("auto") == ("mp4" if encode.mp4_available() else "gif")


@needs_gl
@pytest.mark.parametrize("args, expected", [
    (["task=nope-v3"], "task='nope-v3' is not a task of this run; allowed: reach-v3, push-v3"),
    (["camera=ceiling"], "camera='ceiling' is not a camera of reach-v3; allowed: topview, corner"),
])
def test_bad_video_input_is_one_line_and_nothing_written(video_run, tmp_path, args, expected):
    out = tmp_path / "out"
    assert_usage_error(run_cli("video", f"run_dir={video_run[0]}", "task=reach-v3", *args, f"out={out}"), expected)
    assert not out.exists()


def test_video_of_a_folder_without_checkpoint_is_refused(tmp_path):
    assert_usage_error(run_cli("video", f"run_dir={tmp_path}"), "holds no checkpoint")


@pytest.mark.parametrize("args, expected", [
    ([], "needs run_dir=DIR"),
    (["run_dir=r", "episodes=0"], "episodes='0' must be an integer >= 1"),
    (["run_dir=r", "colour=red"], "unknown option 'colour'; allowed: run_dir, task"),
    (["run_dir=r", "task=[]"], "task= needs a task name"),
    (["run_dir=r", "format=webm"], "format='webm'; allowed: auto, mp4, gif"),
])
def test_bad_video_arguments(args, expected):
    with pytest.raises(video.VideoError, match=re.escape(expected)):
        command.parse_args(args)


def test_video_arguments_parse_to_options():
    opts = command.parse_args(["run_dir=r", "task=[reach-v3,push-v3]", "episodes=3", "width=64", "seed=0"])
    assert opts["task"] == ["reach-v3", "push-v3"] and opts["episodes"] == 3 and opts["width"] == 64
    assert opts["seed"] == 0 and opts["height"] == 480 and opts["device"] == "cpu" and opts["out"] is None
    assert command.parse_args(["run_dir=r", "task=reach-v3,push-v3"])["task"] == ["reach-v3", "push-v3"]


@needs_gl
def test_no_working_off_screen_gl_is_one_line_naming_backend_and_packages(video_run, tmp_path):
    # A real failed initialisation: EGL asked for while PyOpenGL is pinned to another platform.
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", "video", f"run_dir={video_run[0]}",
                           "task=reach-v3", f"out={tmp_path / 'out'}"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert_usage_error(proc, "no off-screen OpenGL for rendering: tried MUJOCO_GL=egl (")
    assert "libegl1" in proc.stderr and "libosmesa6" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_gl_backend_is_refused(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    monkeypatch.setattr(gl, "_chosen_backend", None)
    with pytest.raises(video.VideoError, match="MUJOCO_GL='vulkan' is not a MuJoCo rendering backend; "
                                               "allowed: egl, osmesa, glfw, glx"):
        gl.choose_gl_backend()


@pytest.mark.parametrize("args, expected", [
    (["video.every=500", "video.tasks=[nope-v3]"],
     "video.tasks has 'nope-v3', which is not a task of this run; allowed: reach-v3"),
    (["video.every=0"], "video.every=0 must be an integer >= 1"),
    (["video.every=500", "video.width=-1"], "video.width=-1 must be an integer >= 1"),
])
def test_bad_video_config_is_refused_before_training(args, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        compose_config([*TINY, *args])
