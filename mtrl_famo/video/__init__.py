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

One job per module, in the order a video is made:

- :mod:`~mtrl_famo.video.tasks`: which tasks to film (names checked against the run's tasks);
- :mod:`~mtrl_famo.video.gl`: choosing an off-screen OpenGL backend;
- :mod:`~mtrl_famo.video.render`: episodes to annotated frames;
- :mod:`~mtrl_famo.video.encode`: frames to an MP4/GIF file, atomically;
- :mod:`~mtrl_famo.video.periodic`: the training hook (``video.every``);
- :mod:`~mtrl_famo.video.command`: ``mtrl-famo video``.

This file imports nothing heavy, so ``from mtrl_famo.video import VideoError`` is cheap.
"""

from mtrl_famo.config import ConfigError

VIDEOS_DIR = "videos"  # run_dir/videos: where training and `mtrl-famo video` write


class VideoError(ConfigError):
    """Bad input to ``mtrl-famo video`` or no off-screen OpenGL; one line, exit code 2."""
