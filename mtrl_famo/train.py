"""The training loop: collect, update, evaluate, log, checkpoint, resume."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mtrl_famo.buffer import ReplayBuffer
from mtrl_famo.atomic import write_json, write_text
from mtrl_famo.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from mtrl_famo.config import Config
from mtrl_famo.envs import make_envs, step_async, step_wait, task_names, true_next_obs
from mtrl_famo.evaluate import EvalResult, evaluate
from mtrl_famo.nonfinite import NonFiniteWatch
from mtrl_famo.run_files import CONFIG_FILE, EVALS_FILE, RESULTS_FILE
from mtrl_famo.sac import MTSAC
from mtrl_famo.video import PeriodicVideos



def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def configure_threads(requested: int, device: torch.device) -> None:
    """0 = one thread on small CPU machines (measured fastest for these MLP sizes), else torch's default."""
    if requested > 0:
        torch.set_num_threads(requested)
    elif device.type == "cpu" and (os.cpu_count() or 1) <= 4:
        torch.set_num_threads(1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate_checkpoint(cfg: Config) -> EvalResult:
    """``cfg.eval.episodes`` evaluation episodes per task of the agent in ``cfg.run_dir``'s checkpoint.

    Builds only what evaluation needs: the evaluation envs and the networks (no training
    envs, replay buffer or TensorBoard writer).
    """
    device = resolve_device(cfg.device)
    configure_threads(cfg.train.torch_threads, device)
    seed_everything(cfg.seed)
    envs = make_envs(cfg.benchmark, cfg.seed)
    try:
        names = task_names(envs)
        agent, step = load_agent(cfg, envs.single_observation_space.shape[0], envs.single_action_space.shape[0],
                                 names, device)
        return evaluate(agent, envs, names, cfg.eval.episodes, step)
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
    agent = MTSAC(obs_dim, act_dim, len(names), cfg.agent, cfg.aggregator, device)
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} does not fit its config.yaml "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return agent, int(state["step"])


@dataclass
class RunLengths:
    """Step counts of a run, in environment steps summed over tasks."""

    total: int
    warmup: int
    eval_every: int
    checkpoint_every: int
    log_every: int

    @classmethod
    def from_config(cls, cfg: Config, num_tasks: int) -> "RunLengths":
        t = cfg.train
        return cls(
            total=t.total_for(num_tasks),
            warmup=t.warmup_steps if t.warmup_steps is not None else 4000 * num_tasks,
            eval_every=cfg.eval.every,
            checkpoint_every=t.checkpoint_every or cfg.eval.every,
            log_every=t.log_every,
        )


def crossed(prev_step: int, step: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(prev_step, step]``."""
    return step // every > prev_step // every


class Trainer:
    """Owns the envs, agent, buffer and logs of one run in ``cfg.run_dir``."""

    def __init__(self, cfg: Config, out=print):
        self.cfg = cfg
        self.out = out
        self.run_dir = Path(cfg.run_dir)
        self.device = resolve_device(cfg.device)
        configure_threads(cfg.train.torch_threads, self.device)
        seed_everything(cfg.seed)

        self.envs = make_envs(cfg.benchmark, cfg.seed)
        self.eval_envs = make_envs(cfg.benchmark, cfg.seed)
        self.task_names = task_names(self.envs)
        self.num_tasks = len(self.task_names)
        obs_dim = self.envs.single_observation_space.shape[0]
        act_dim = self.envs.single_action_space.shape[0]
        self.lengths = RunLengths.from_config(cfg, self.num_tasks)

        self.agent = MTSAC(obs_dim, act_dim, self.num_tasks, cfg.agent, cfg.aggregator, self.device,
                           immediate_checks=False, compile_mode=cfg.train.compile)
        self.nonfinite = NonFiniteWatch(self.agent.watched_metrics(), self.task_names, self.device)
        capacity = max(1, cfg.train.buffer_size // self.num_tasks)
        self.buffer = ReplayBuffer(self.num_tasks, capacity, obs_dim, act_dim, self.device)
        self.step = 0
        self.evals: list[EvalResult] = []
        #: wall seconds spent choosing actions, in gradient updates and waiting for the envs.
        self.timing = {"act": 0.0, "update": 0.0, "env": 0.0}

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "task_names": self.task_names,
            "config": OmegaConf.to_container(OmegaConf.structured(self.cfg)),
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "action_space": self.envs.action_space.np_random.bit_generator.state,
                "agent": self.agent.generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        if state["task_names"] != self.task_names:
            raise ValueError(f"checkpoint tasks {state['task_names']} differ from this run's {self.task_names}")
        self.step = state["step"]
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.envs.action_space.np_random.bit_generator.state = rng["action_space"]
        # Checkpoints from before the agent had its own stream: it continues the global one.
        if "agent" in rng:
            self.agent.generator.set_state(rng["agent"])
        elif self.device.type == "cuda" and rng["cuda"] is not None:
            self.agent.generator.set_state(rng["cuda"][self.device.index or 0])
        elif self.device.type == "cpu":
            self.agent.generator.set_state(rng["torch"])

    def save(self) -> None:
        self._check_finite()
        save_checkpoint(checkpoint_path(self.run_dir), self.state_dict())

    def _check_finite(self) -> None:
        """Stop the run if any update so far produced NaN/inf (one host sync)."""
        try:
            self.nonfinite.check()
        except FloatingPointError as exc:
            self._stop_non_finite(str(exc))

    def _stop_non_finite(self, problem: str) -> None:
        """Raise FloatingPointError: ``problem``, and what became of the checkpoint."""
        kept = (f"the last checkpoint in {self.run_dir} is intact" if checkpoint_path(self.run_dir).exists()
                else "no checkpoint was written")
        raise FloatingPointError(f"{problem}; {kept}")

    def resume(self) -> None:
        """Load the run's checkpoint and drop evaluations logged after it (they will be redone)."""
        self.load_state_dict(load_checkpoint(checkpoint_path(self.run_dir), map_location=self.device))
        evals_file = self.run_dir / EVALS_FILE
        if evals_file.exists():
            kept = [json.loads(line) for line in evals_file.read_text().splitlines() if line.strip()]
            self.evals = [EvalResult(e["step"], e["episodes"], e["success_rate"], e["episodic_return"])
                          for e in kept if e["step"] <= self.step]
            self._write_evals()

    # ---------------------------------------------------------------- loop
    def run(self, resume: bool = False) -> dict:
        """Train to ``total`` steps (continuing from the checkpoint when ``resume``); return the results."""
        self.videos = (PeriodicVideos(self.cfg, self.task_names, self.run_dir, self.out, self.eval_envs)
                       if self.cfg.video.every else None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
            self.out(f"resuming {self.run_dir} from step {self.step}")
        else:
            (self.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(self.cfg)))
        writer = SummaryWriter(str(self.run_dir / "tb"))
        if not resume:
            writer.add_text("hyperparameters", "```yaml\n" + OmegaConf.to_yaml(OmegaConf.structured(self.cfg)) + "```")
        try:
            self._loop(writer)
            final = self._evaluate(writer, self.cfg.eval.final_episodes)
            results = self._results(final)
            write_json(self.run_dir / RESULTS_FILE, results)
            self.save()
        finally:
            writer.close()
            self.envs.close()
            self.eval_envs.close()
        self.out(final.table())
        self.out(f"results written to {self.run_dir / RESULTS_FILE}")
        return results

    def _loop(self, writer: SummaryWriter) -> None:
        """Collect and learn until ``total`` steps.

        Each iteration sends the actions to the envs (``step_async``), runs the gradient
        updates on the replay data gathered so far while the envs step (in parallel with
        ``benchmark.vector_strategy=async``), then stores the new transitions. The order is
        the same for sync and async envs, so both give the same run for the same seed.
        """
        cfg, n, k = self.cfg, self.lengths, self.num_tasks
        obs, _ = self.envs.reset(seed=cfg.seed + self.step)
        episode_success = np.zeros(k, dtype=bool)
        sps_clock, sps_step = time.perf_counter(), self.step
        bar = tqdm(total=n.total, initial=self.step, unit="step", unit_scale=True, dynamic_ncols=True,
                   disable=not cfg.train.progress, mininterval=1.0)
        while self.step < n.total:
            prev_step, self.step = self.step, self.step + k
            log_now = crossed(prev_step, self.step, n.log_every)
            clock = time.perf_counter()
            learning = prev_step >= n.warmup and self.buffer.size > 0
            actions = self.agent.act(obs) if learning else self.envs.action_space.sample()
            if learning and not np.isfinite(actions).all():  # already on the host: costs no sync
                self._check_finite()  # names the update that went wrong, if the watch saw it
                self._stop_non_finite(f"non-finite actions (NaN or inf) from the policy at step {self.step}")
            pending = step_async(self.envs, actions)
            self.timing["act"] += time.perf_counter() - clock

            clock = time.perf_counter()
            if learning:
                for u in range(cfg.train.updates_per_step):
                    metrics = self.agent.update(self.buffer.sample(cfg.train.per_task_batch, self.agent.generator),
                                                diagnostics=log_now and u == 0)
                    self.nonfinite.observe(metrics, self.step)
                    if log_now and u == 0:
                        self._check_finite()
                        self._log_update(writer, metrics)
            self.timing["update"] += time.perf_counter() - clock

            clock = time.perf_counter()
            next_obs, rewards, terminated, truncated, infos = step_wait(self.envs, pending)
            self.timing["env"] += time.perf_counter() - clock
            self.buffer.add(obs, actions, rewards, true_next_obs(next_obs, infos), terminated)
            done = terminated | truncated
            episode_success |= self._step_success(infos, done)
            self._log_finished_episodes(writer, infos, done, episode_success)
            obs = next_obs
            bar.update(k)

            if log_now:
                now = time.perf_counter()
                writer.add_scalar("charts/SPS", (self.step - sps_step) / (now - sps_clock), self.step)
                sps_clock, sps_step = now, self.step
            if crossed(prev_step, self.step, n.eval_every) and self.step < n.total:
                result = self._evaluate(writer, cfg.eval.episodes)
                bar.set_postfix(success=f"{result.mean_success_rate:.2f}")
            if self.videos is not None and crossed(prev_step, self.step, cfg.video.every):
                self._check_finite()
                self.videos(self.agent, self.step)
            if crossed(prev_step, self.step, n.checkpoint_every) and self.step < n.total:
                self.save()
        bar.close()

    # ---------------------------------------------------------------- logging
    @staticmethod
    def _step_success(infos: dict, done: np.ndarray) -> np.ndarray:
        """``[num_tasks]`` bool: this step reached success (finished episodes read ``final_info``)."""
        success = np.asarray(infos.get("success", np.zeros(len(done))), dtype=float) > 0
        if done.any() and "final_info" in infos:
            final = np.asarray(infos["final_info"].get("success", np.zeros(len(done))), dtype=float) > 0
            success = np.where(done, final, success)
        return success

    def _log_finished_episodes(self, writer: SummaryWriter, infos: dict, done: np.ndarray,
                               episode_success: np.ndarray) -> None:
        if not done.any():
            return
        returns = infos["final_info"]["episode"]["r"]
        for i in np.flatnonzero(done):
            name = self.task_names[i]
            writer.add_scalar(f"charts/episodic_return/{name}", float(returns[i]), self.step)
            writer.add_scalar(f"charts/train_success/{name}", float(episode_success[i]), self.step)
        episode_success[done] = False

    def _log_update(self, writer: SummaryWriter, metrics: dict[str, torch.Tensor]) -> None:
        """Write one update's metrics; per-task vectors become one scalar per task."""
        for key, value in metrics.items():
            value = value.detach().float().cpu()
            if value.ndim == 0:
                writer.add_scalar(key, value.item(), self.step)
                continue
            for name, v in zip(self.task_names, value.tolist()):
                writer.add_scalar(f"{key}/{name}", v, self.step)

    def _evaluate(self, writer: SummaryWriter, episodes: int) -> EvalResult:
        self._check_finite()
        result = evaluate(self.agent, self.eval_envs, self.task_names, episodes, self.step)
        writer.add_scalar("charts/mean_success_rate", result.mean_success_rate, self.step)
        for name in self.task_names:
            writer.add_scalar(f"charts/success_rate/{name}", result.success_rate[name], self.step)
            writer.add_scalar(f"charts/eval_return/{name}", result.episodic_return[name], self.step)
        writer.flush()
        # One record per step: the final evaluation replaces a periodic one at the same step.
        self.evals = [e for e in self.evals if e.step != result.step] + [result]
        self._write_evals()
        return result

    def _write_evals(self) -> None:
        write_text(self.run_dir / EVALS_FILE, "".join(json.dumps(e.to_dict()) + "\n" for e in self.evals))

    def _results(self, final: EvalResult) -> dict:
        return {
            "benchmark": self.cfg.benchmark.label,
            "aggregator": self.cfg.aggregator.name,
            "seed": self.cfg.seed,
            "step": self.step,
            "total_steps": self.lengths.total,
            "finished": self.step >= self.lengths.total,
            "tasks": self.task_names,
            **final.to_dict(),
        }
