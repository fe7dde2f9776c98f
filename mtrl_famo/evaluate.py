"""Per-task success rates of the deterministic policy, through Meta-World's own evaluation loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
from metaworld.evaluation import evaluation

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
    """The ``metaworld.evaluation.Agent`` protocol over an :class:`MTSAC`."""

    def __init__(self, agent: MTSAC):
        self.agent = agent

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return self.agent.act(observations, deterministic=True)

    def reset(self, env_mask: np.ndarray) -> None:
        """Stateless policy: nothing to reset."""


def evaluate(agent: MTSAC, envs: gym.vector.VectorEnv, task_names: list[str], episodes: int,
             step: int) -> EvalResult:
    """Run ``episodes`` deterministic episodes per task; an episode succeeds if it reaches ``success``.

    Meta-World's ``evaluation`` ends an episode at its first success, so a good policy
    is evaluated quickly.
    """
    _, _, success, returns = evaluation(_DeterministicPolicy(agent), envs, num_episodes=episodes)
    return EvalResult(
        step=step,
        episodes=episodes,
        success_rate={name: float(success[name]) for name in task_names},
        episodic_return={name: float(np.mean(returns[name])) for name in task_names},
    )
