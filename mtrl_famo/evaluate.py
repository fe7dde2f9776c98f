"""Per-task success rates of the deterministic policy, through Meta-World's own evaluation loop.

Also loads a trained agent from a run's checkpoint (:func:`load_agent`), which the
``eval`` and ``video`` commands share, and evaluates it (:func:`evaluate_checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
from metaworld.evaluation import evaluation
from tqdm import tqdm

import torch

from mtrl_famo.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, load_error_line
from mtrl_famo.config import Config
from mtrl_famo.envs import make_envs, task_names as env_task_names
from mtrl_famo.runtime import configure_threads, resolve_device, seed_everything
from mtrl_famo.sac import MTSAC


@dataclass
class EvalResult:
    """Success rate and mean episodic return of each task, in task order."""

    step: int
    episodes: int
    success_rate: dict[str, float]
    episodic_return: dict[str, float]

    @property
    def mean_success_rate(self) -> float:
        return float(np.mean(list(self.success_rate.values())))

    def to_dict(self) -> dict:
        return {"step": self.step, "episodes": self.episodes, "mean_success_rate": self.mean_success_rate,
                **{k: v for k, v in asdict(self).items() if k not in ("step", "episodes")}}

    def table(self) -> str:
        """A Markdown table of per-task success and return, mean last."""
        width = max(len(name) for name in self.success_rate)
        lines = [f"| {'task'.ljust(width)} | success | return |", f"|{'-' * (width + 2)}|--------:|-------:|"]
        for name, rate in self.success_rate.items():
            lines.append(f"| {name.ljust(width)} | {rate:7.2f} | {self.episodic_return[name]:6.0f} |")
        lines.append(f"| {'mean'.ljust(width)} | {self.mean_success_rate:7.2f} | "
                     f"{np.mean(list(self.episodic_return.values())):6.0f} |")
        return "\n".join(lines)


class _DeterministicPolicy:
    """The ``metaworld.evaluation.Agent`` protocol over an :class:`MTSAC`; counts finished episodes for a bar."""

    def __init__(self, agent: MTSAC, bar=None):
        self.agent = agent
        self.bar = bar
        self.calls = 0

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return self.agent.act(observations, deterministic=True)

    def reset(self, env_mask: np.ndarray) -> None:
        """Stateless policy: nothing to reset. Meta-World calls this with the envs whose episode ended."""
        self.calls += 1
        if self.bar is not None and self.calls > 1:  # the first call is the initial reset of every env
            self.bar.update(min(int(np.sum(env_mask)), self.bar.total - self.bar.n))


def evaluate(agent: MTSAC, envs: gym.vector.VectorEnv, task_names: list[str], episodes: int,
             step: int, progress: bool = False) -> EvalResult:
    """Run ``episodes`` deterministic episodes per task; an episode succeeds if it reaches ``success``.

    Meta-World's ``evaluation`` ends an episode at its first success, so a good policy
    is evaluated quickly.

    :param progress: show a bar of finished episodes (``episodes x tasks``) on stderr.
    """
    bar = tqdm(total=episodes * len(task_names), unit="episode", desc="evaluating", dynamic_ncols=True,
               mininterval=1.0) if progress else None
    try:
        _, _, success, returns = evaluation(_DeterministicPolicy(agent, bar), envs, num_episodes=episodes)
    finally:
        if bar is not None:
            bar.close()
    return EvalResult(
        step=step,
        episodes=episodes,
        success_rate={name: float(success[name]) for name in task_names},
        episodic_return={name: float(np.mean(returns[name])) for name in task_names},
    )


def evaluate_checkpoint(cfg: Config, progress: bool = False, out=print) -> EvalResult:
    """``cfg.eval.episodes`` evaluation episodes per task of the agent in ``cfg.run_dir``'s checkpoint.

    Builds only what evaluation needs: the evaluation envs and the networks (no training
    envs, replay buffer or TensorBoard writer).

    :param progress: print what is evaluated, then show a bar of finished episodes.
    """
    device = resolve_device(cfg.device)
    configure_threads(cfg.train.torch_threads, device)
    seed_everything(cfg.seed)
    envs = make_envs(cfg.benchmark, cfg.seed)
    try:
        names = env_task_names(envs)
        agent, step = load_agent(cfg, envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                                 names, device)
        if progress:
            out(f"evaluating {cfg.run_dir} (step {step:,}): {cfg.eval.episodes} episodes x {len(names)} task"
                f"{'s' if len(names) != 1 else ''} on {device}")
        return evaluate(agent, envs, names, cfg.eval.episodes, step, progress=progress)
    finally:
        envs.close()


def load_agent(cfg: Config, obs_dim: int, act_dim: int, names: list[str], device: torch.device) -> tuple[MTSAC, int]:
    """The agent (networks, temperatures) of ``cfg.run_dir``'s checkpoint, and its step.

    :raises CheckpointError: the checkpoint is missing or corrupt, was trained on other
        tasks than ``names``, or does not fit the networks of ``cfg``.
    """
    path = checkpoint_path(cfg.run_dir)
    state = load_checkpoint(path, map_location=device)
    if state.get("task_names", names) != names:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} was trained on tasks {state['task_names']}, "
                              f"not the {cfg.benchmark.name} tasks {names}")
    saved = state.get("config", {}).get("agent", {}).get("network", "mlp")  # before agent.network: an MLP
    if saved != cfg.agent.network:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} holds agent.network={saved} networks, but its "
                              f"config.yaml has agent.network={cfg.agent.network}")
    agent = MTSAC(obs_dim, act_dim, len(names), cfg.agent, cfg.aggregator, device)
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} does not fit its config.yaml "
                              f"(agent.hidden_sizes={list(cfg.agent.hidden_sizes)}): {load_error_line(exc)}") from None
    return agent, int(state["step"])
