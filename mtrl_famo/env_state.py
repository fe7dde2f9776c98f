"""The simulators' state in a checkpoint, through Meta-World 3's own checkpoint API.

Meta-World's ``CheckpointWrapper.get_checkpoint`` / ``load_checkpoint`` (called on every
sub-env through the vector env, as the Meta-World+ reference does) save each env's task
list, its task-sampling RNG and the env's own RNGs (``get_env_rng_checkpoint``: the env,
its action, observation and goal spaces). They leave out the episode in progress: the
MuJoCo state, the task-specific attributes set at reset (goal and object positions), the
previous frame in the observation, and the wrappers' counters (time limit, episode return).
All of these follow from the episode's task and the actions taken since its reset, so the
checkpoint holds those too (:class:`EpisodeLog`): a resume resets every env into its current
task and replays the actions, then loads Meta-World's checkpoint, which puts every RNG
where it was. The observation the loop held is saved as well, and the replay must give it
back bit for bit (else the resume says so in one line and starts new episodes).

EnvPool's training envs (``benchmark.backend=envpool``) keep their MuJoCo state and random generator in
C++, which EnvPool 1.2.5 can neither read nor set (its seeds are fixed when a pool is made). Their
checkpoint holds only the seed their pools were made with; a resume makes the pools anew with a seed
derived from it and the step, and every training env starts a new episode (the learner's state, the
replay buffer and every Python-side random stream are restored as for Meta-World's envs).

The training envs step in lockstep (no training env terminates early: Meta-World's
``terminate_on_success`` is off, and every episode is truncated at the same length), so one
``[steps, num_envs, act_dim]`` array replays them all through the ordinary vector ``step``,
sync and async alike. The evaluation envs hold no episode between evaluations (Meta-World's
``evaluation`` resets them first), so their Meta-World checkpoint is all they need.
"""

from __future__ import annotations

import base64
import pickle

import gymnasium as gym
import numpy as np

from mtrl_famo.checkpoint import derived_seed

#: Version of the ``envs`` entry of a checkpoint.
FORMAT = 1


class EpisodeLog:
    """The actions the training envs took since their current episodes began.

    ``replayable`` is False when some envs ended an episode while others did not (then the
    episodes cannot be replayed together; the next time all envs end together it is True again).
    """

    def __init__(self):
        self.actions: list[np.ndarray] = []  # one [num_envs, act_dim] array per vector step
        self.replayable = True

    def record(self, actions: np.ndarray) -> None:
        self.actions.append(np.array(actions, copy=True))

    def step_done(self, done: np.ndarray) -> None:
        """After the step that ``record`` saw: ``done`` ``[num_envs]`` bool (terminated | truncated)."""
        if done.all():
            self.actions, self.replayable = [], True
        elif done.any():
            self.actions, self.replayable = [], False

    def start(self) -> None:
        """Every env has just been reset."""
        self.actions, self.replayable = [], True


def _current_task_indices(envs: gym.vector.VectorEnv, checkpoints: list) -> list[int]:
    """Index, in each env's task list, of the task of its current episode.

    Meta-World's ``set_task`` stores the task's goal vector in ``_last_rand_vec``; the task
    whose serialised data holds that vector is the current one.
    """
    indices = []
    for (env_id, ckpt), rand_vec in zip(checkpoints, envs.get_attr("_last_rand_vec")):
        for j, task in enumerate(ckpt["tasks"]):
            if np.array_equal(pickle.loads(base64.b64decode(task["data"]))["rand_vec"], rand_vec):
                indices.append(j)
                break
        else:
            raise RuntimeError(f"env {env_id}: its current goal is none of its tasks'")
    return indices


def capture(envs: gym.vector.VectorEnv, eval_envs: gym.vector.VectorEnv, obs: np.ndarray,
            log: EpisodeLog, step: int = 0) -> dict:
    """The ``envs`` entry of a checkpoint, taken between two loop iterations.

    :param obs: ``[num_envs, obs_dim]`` the observations the loop acts on next.
    :param step: the run's step (EnvPool's envs: a resume seeds their new pools from it).
    """
    if getattr(envs, "backend", None) == "envpool":
        return {"format": FORMAT, "eval": {"metaworld": list(eval_envs.call("get_checkpoint"))},
                "train": {"envpool": {"seed": envs.seed_, "next_seed": derived_seed(envs.seed_, step, "envpool")},
                          "obs": np.array(obs, copy=True)}}
    checkpoints = list(envs.call("get_checkpoint"))
    replay = None
    if log.replayable:
        replay = {
            "tasks": _current_task_indices(envs, checkpoints),
            "actions": (np.stack(log.actions) if log.actions
                        else np.zeros((0, *envs.action_space.shape), dtype=envs.action_space.dtype)),
        }
    return {
        "format": FORMAT,
        "train": {"metaworld": checkpoints, "obs": np.array(obs, copy=True), "replay": replay},
        "eval": {"metaworld": list(eval_envs.call("get_checkpoint"))},
    }


def restore(envs: gym.vector.VectorEnv, eval_envs: gym.vector.VectorEnv, state: dict,
            log: EpisodeLog) -> tuple[np.ndarray, str | None]:
    """Put freshly built envs where :func:`capture` found them.

    :return: the observations the loop acts on next ``[num_envs, obs_dim]``, and ``None`` when
        the episodes in progress were restored exactly, else one line saying what starts afresh.
    """
    train = state["train"]
    eval_envs.call("load_checkpoint", state["eval"]["metaworld"])
    if "envpool" in train or getattr(envs, "backend", None) == "envpool":
        if "envpool" not in train:
            raise RuntimeError("the checkpoint holds Meta-World's training envs, not EnvPool's")
        obs, _ = envs.reset(seed=train["envpool"]["next_seed"])
        log.start()
        return obs, ("EnvPool's training envs cannot save the episodes in progress (their state is in C++): they "
                     "start new episodes, their pools seeded anew from the checkpoint's step")
    checkpoints, replay = train["metaworld"], train["replay"]
    if replay is not None:
        # Each env's task list cut to its current task: the reset below starts exactly that episode.
        start = [(env_id, {**ckpt, "tasks": [ckpt["tasks"][i]], "sample_tasks_on_reset": True})
                 for (env_id, ckpt), i in zip(checkpoints, replay["tasks"])]
        envs.call("load_checkpoint", start)
        obs, _ = envs.reset()
        for actions in replay["actions"]:
            obs, _, terminated, truncated, _ = envs.step(actions)
            if (terminated | truncated).any():
                break
        envs.call("load_checkpoint", checkpoints)  # every RNG and task list as they were
        if obs.shape == train["obs"].shape and np.array_equal(obs, train["obs"]):
            log.start()
            log.actions = [np.array(a, copy=True) for a in replay["actions"]]
            return obs, None
        problem = "replaying the episodes in progress did not give the saved observations"
    else:
        problem = "some envs were between episodes"
        envs.call("load_checkpoint", checkpoints)
    obs, _ = envs.reset()  # new episodes, their goals from the restored RNGs
    log.start()
    return obs, f"{problem}: the training envs start new episodes (their goal sequences continue)"
