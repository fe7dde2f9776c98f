"""The training loop: collect, update, evaluate, log, checkpoint, resume."""

from __future__ import annotations

import json
import signal
import sys
import threading
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
from mtrl_famo import env_state
from mtrl_famo.checkpoint import (CheckpointError, checkpoint_path, load_checkpoint, load_error_line, load_rng_streams,
                                  rng_streams, save_checkpoint)
from mtrl_famo.config import Config
from mtrl_famo.envs import (benchmark_task_names, make_envs, make_training_envs, step_async, step_wait, task_names,
                            true_next_obs)
from mtrl_famo.evaluate import EvalResult, evaluate
from mtrl_famo.nonfinite import NonFiniteWatch
from mtrl_famo.restart import unstarted_run
from mtrl_famo.run_files import CONFIG_FILE, EVALS_FILE, RESULTS_FILE, TENSORBOARD_DIR
from mtrl_famo.run_records import RunFileError, read_jsonl
from mtrl_famo.runtime import configure_threads, resolve_device, seed_everything
from mtrl_famo.sac import MTSAC
from mtrl_famo.step_rules import env_actions, stored_terminated, updates_at
from mtrl_famo.video import VIDEOS_DIR
from mtrl_famo.video.periodic import PeriodicVideos


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
            warmup=t.warmup_for(num_tasks),
            eval_every=cfg.eval.every,
            checkpoint_every=t.checkpoint_every or cfg.eval.every,
            log_every=t.log_every,
        )


CPU_WARNING_STEPS = 1_000_000  # a budget from which a CPU run gets a warning (days with default networks)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """While active, SIGINT and SIGTERM set ``received`` (the loop stops after its step); a second one aborts."""

    def __init__(self):
        self.received: str | None = None
        self.exit_code = 0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: stop now, the last checkpoint stays as it is
            raise KeyboardInterrupt
        self.received, self.exit_code = signal.Signals(signum).name, 128 + signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class LearningSpeed:
    """Prints once how long the rest of the run will take, from the speed of the learning phase alone."""

    MIN_SECONDS = 5.0

    def __init__(self, total: int, out, evaluations_left=lambda step: (0, 0.0)):
        """:param evaluations_left: ``step -> (evaluations, seconds)`` still to come, the final one included."""
        self.total, self.out, self.evaluations_left = total, out, evaluations_left
        self.start_step: int | None = None
        self.clock = 0.0
        self.done = False
        self.paused = 0.0
        self._pause_from: float | None = None

    def start(self, step: int) -> None:
        self.start_step, self.clock = step, time.perf_counter()
        self.first_seen = False
        self.paused = 0.0  # seconds of evaluations and checkpoints since the clock started
        self._pause_from = None

    def pause_ended(self) -> None:
        """An evaluation or checkpoint ended: leave its time out of the learning speed.

        Called right after the pause; the pause began at the last ``observe``."""
        if self._pause_from is not None:
            self.paused += time.perf_counter() - self._pause_from

    def observe(self, step: int) -> None:
        if self.done or self.start_step is None:
            return
        self._pause_from = time.perf_counter()
        if not self.first_seen:  # leave out the first learning step: its update compiles (train.compile)
            self.start_step, self.clock, self.first_seen = step, time.perf_counter(), True
            self.paused = 0.0
            return
        elapsed = time.perf_counter() - self.clock - self.paused
        if elapsed < self.MIN_SECONDS or step == self.start_step:
            return
        rate = (step - self.start_step) / elapsed
        count, eval_seconds = self.evaluations_left(step)
        self.out(f"learning at {rate:,.1f} steps/s: about {format_duration((self.total - step) / rate + eval_seconds)} "
                 f"for the remaining {self.total - step:,} steps and {count} evaluation{'s' if count != 1 else ''} "
                 f"(the final one included)")
        self.done = True


def announce(out, what: str, cfg: Config, lengths: RunLengths, num_tasks: int, device: torch.device,
             step: int) -> None:
    """The start line of a run or population (``what``: its folder, and seeds) and, on a CPU with a long
    budget, a warning on stderr."""
    threads = f", {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}" \
        if device.type == "cpu" else ""
    out(f"training {what}: {cfg.benchmark.label} ({num_tasks} task{'s' if num_tasks != 1 else ''}), "
        f"aggregator={cfg.aggregator.name}, device={device}{threads}; {lengths.total:,} steps ({lengths.warmup:,} of "
        f"random-action warm-up), from step {step:,}; the time left is printed once learning has run a few seconds")
    if device.type == "cpu" and lengths.total - step >= CPU_WARNING_STEPS:
        print(f"warning: {lengths.total - step:,} steps on a CPU take days with the default networks (about "
              f"100 h for the full MT10 protocol on 2 cores); for a CPU-sized study use experiment=mt10_cpu, "
              f"or a GPU (device=cuda)", file=sys.stderr)


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``4.2 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def remove_orphan_temp_files(run_dir: Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left (``.NAME.XXXX.tmp``).

    Only the one process holding the run folder's lock calls this, so none of them is being written.
    """
    for folder in (run_dir, run_dir / VIDEOS_DIR):
        if folder.is_dir():
            for path in folder.glob(".*.tmp*"):
                if path.is_file():
                    path.unlink(missing_ok=True)


def load_resume_state(cfg: Config) -> dict:
    """The checkpoint of ``cfg.run_dir``, checked against the run's tasks and replay capacity before any env is built.

    :raises CheckpointError: missing, corrupt, or of another benchmark or buffer size.
    """
    state = load_checkpoint(checkpoint_path(cfg.run_dir), map_location="cpu")
    names = benchmark_task_names(cfg.benchmark)
    if state.get("task_names") != names:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} was trained on tasks {state.get('task_names')}, "
                              f"not the {cfg.benchmark.label} tasks {names} of its config")
    capacity = max(1, cfg.train.buffer_size // len(names))
    saved = state.get("buffer", {}).get("capacity")
    if saved != capacity:
        raise CheckpointError(f"checkpoint of {str(cfg.run_dir)!r} holds a replay buffer of {saved} transitions per "
                              f"task, not the {capacity} of train.buffer_size={cfg.train.buffer_size}")
    return state


def open_writer(run_dir: Path, resumed_at: int | None, cfg: Config) -> SummaryWriter:
    """The TensorBoard writer of a run folder.

    A resumed run drops the events logged after its checkpoint (they are redone), and keeps those
    of the checkpoint's own step (logged before it was written, never redone): TensorBoard hides
    every event at or after ``purge_step``, hence the checkpoint's step + 1. A new run logs its
    hyperparameters.

    :param resumed_at: the checkpoint's step, or None for a run from step 0.
    """
    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=None if resumed_at is None else resumed_at + 1)
    if resumed_at is None:
        writer.add_text("hyperparameters", "```yaml\n" + OmegaConf.to_yaml(OmegaConf.structured(cfg)) + "```")
    return writer


def crossed(prev_step: int, step: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in ``(prev_step, step]``."""
    return step // every > prev_step // every


class Trainer:
    """Owns the envs, agent, buffer and logs of one run in ``cfg.run_dir``."""

    def __init__(self, cfg: Config, out=print):
        self.cfg = cfg
        self.out = out
        self.run_dir = Path(cfg.run_dir)
        #: the folder holds a run stopped before its first checkpoint (same config): it starts again.
        self.restart = unstarted_run(cfg)
        self.device = resolve_device(cfg.device)
        configure_threads(cfg.train.torch_threads, self.device)
        seed_everything(cfg.seed)

        self.envs = make_training_envs(cfg.benchmark, cfg.seed)  # benchmark.backend's; evaluation: Meta-World's
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
        self.buffer = ReplayBuffer(self.num_tasks, capacity, obs_dim, act_dim, self.device,
                                   shared_indices=cfg.train.shared_replay_indices)
        self.step = 0
        self.evals: list[EvalResult] = []
        # What the loop holds between two steps (saved in the checkpoint with the envs' state):
        self.obs: np.ndarray | None = None  # [num_tasks, obs_dim] to act on next; None: reset the envs first
        self.episode_log = env_state.EpisodeLog()  # the actions of the episodes in progress
        self.episode_success = np.zeros(self.num_tasks, dtype=bool)  # [num_tasks] success so far this episode
        self.writer: SummaryWriter | None = None
        #: lines a resume prints: what could not be restored exactly.
        self.resume_notes: list[str] = []
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
            "rng": rng_streams(self.envs.action_space, self.agent.generator),
            # The simulators (Meta-World's checkpoint API and the episodes in progress), and the loop's state.
            "envs": (env_state.capture(self.envs, self.eval_envs, self.obs, self.episode_log, self.step)
                     if self.obs is not None else None),
            "loop": {"episode_success": self.episode_success.copy()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["task_names"] != self.task_names:
            raise ValueError(f"checkpoint tasks {state['task_names']} differ from this run's {self.task_names}")
        self.step = state["step"]
        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self._load_rng(state["rng"])
        self._load_envs(state)

    def _load_rng(self, rng: dict) -> None:
        note = load_rng_streams(rng, self.envs.action_space, self.agent.generator, self.cfg.seed, self.step)
        if note is not None:
            self.resume_notes.append(note)

    def _load_envs(self, state: dict) -> None:
        """The simulators and the loop's state of the checkpoint, or fresh envs where it has none."""
        saved = state.get("envs")
        if saved is None:
            self.resume_notes.append("the checkpoint holds no simulator state (written before mtrl-famo saved "
                                     "it): the envs start fresh, their goal sequences from the start")
            return
        self.obs, problem = env_state.restore(self.envs, self.eval_envs, saved, self.episode_log)
        if problem is None:
            self.episode_success = np.asarray(state["loop"]["episode_success"], dtype=bool).copy()
        else:
            self.resume_notes.append(problem)

    def save(self) -> None:
        """Write the checkpoint atomically.

        :raises OSError: the file could not be written (a full disk): one line, the last checkpoint intact.
        """
        self._check_finite()
        if self.writer is not None:  # the events up to this step on disk before the checkpoint says they exist
            self.writer.flush()
        path = checkpoint_path(self.run_dir)
        try:
            save_checkpoint(path, self.state_dict())
        except OSError as exc:
            kept = "the last checkpoint is intact" if path.exists() else "no checkpoint was written"
            raise OSError(exc.errno, f"cannot write the checkpoint {path} at step {self.step:,} "
                                     f"({exc.strerror or exc}); {kept}") from None

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

    def resume(self, state: dict | None = None) -> None:
        """Load the run's checkpoint and drop evaluations logged after it (they will be redone).

        :param state: the checkpoint, when the caller has already loaded (and checked) it.
        """
        try:
            self.load_state_dict(state if state is not None else load_resume_state(self.cfg))
        except (RuntimeError, KeyError) as exc:  # torch's size mismatch: the networks of another config
            raise CheckpointError(f"checkpoint of {str(self.run_dir)!r} does not fit its config.yaml (agent."
                                  f"hidden_sizes={list(self.cfg.agent.hidden_sizes)}): {load_error_line(exc)}") from None
        evals_file = self.run_dir / EVALS_FILE
        if evals_file.exists():
            try:
                kept = read_jsonl(evals_file)
            except RunFileError as exc:
                raise RunFileError(f"{exc}; fix or delete that line to resume (the evaluations after the "
                                   f"checkpoint are redone)") from None
            self.evals = [EvalResult(e["step"], e["episodes"], e["success_rate"], e["episodic_return"])
                          for e in kept if e["step"] <= self.step]
            self._write_evals()

    # ---------------------------------------------------------------- loop
    def run(self, resume: bool = False, state: dict | None = None) -> dict:
        """Train to ``total`` steps (continuing from the checkpoint when ``resume``); return the results.

        SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before a kill) stop the loop after the
        current step, save a checkpoint and raise :class:`TrainingInterrupted`.

        :param state: the checkpoint to resume from, when the caller has already loaded it.
        """
        self.videos = (PeriodicVideos(self.cfg, self.task_names, self.run_dir, self.out, self.eval_envs)
                       if self.cfg.video.every else None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_orphan_temp_files(self.run_dir)
        if resume:
            self.resume(state)
            self.out(f"resuming {self.run_dir} from step {self.step}")
            for note in self.resume_notes:
                self.out(note)
        else:
            self.start_fresh()
        self._announce()
        writer = self.writer = open_writer(self.run_dir, self.step if resume else None, self.cfg)
        try:
            with StopSignals() as stop:
                self._loop(writer, stop)
                if stop.received:
                    self.save()
                    raise TrainingInterrupted(
                        f"stopped by {stop.received} at step {self.step:,}; checkpoint saved in {self.run_dir}. "
                        f"Resume with: mtrl-famo train run_dir={self.run_dir}", stop.exit_code)
            final = self._final_evaluation(writer)
            results = self._results(final)
            self.save()  # the final weights first: results.json says "finished" only once they are safe
            write_json(self.run_dir / RESULTS_FILE, results)
        finally:
            writer.close()
            self.envs.close()
            self.eval_envs.close()
        self.out(final.table())
        self.out(f"results written to {self.run_dir / RESULTS_FILE}")
        return results

    def start_fresh(self) -> None:
        """Write config.yaml; in a folder of a run stopped before its first checkpoint, drop what it logged."""
        if self.restart:
            self.out(f"{self.run_dir} holds a run with this config stopped before its first checkpoint: "
                     f"starting it again from step 0")
            for path in (self.run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"):
                path.unlink()
            (self.run_dir / EVALS_FILE).unlink(missing_ok=True)
        write_text(self.run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(self.cfg)))

    def _announce(self) -> None:
        """The start line (folder, benchmark, device, budget) and, on a CPU with a long budget, a warning."""
        announce(self.out, str(self.run_dir), self.cfg, self.lengths, self.num_tasks, self.device, self.step)

    def _loop(self, writer: SummaryWriter, stop: "StopSignals") -> None:
        """Collect and learn until ``total`` steps.

        Each iteration sends the actions to the envs (``step_async``), runs the gradient
        updates on the replay data gathered so far while the envs step (in parallel with
        ``benchmark.vector_strategy=async``), then stores the new transitions. The order is
        the same for sync and async envs, so both give the same run for the same seed.
        """
        cfg, n, k = self.cfg, self.lengths, self.num_tasks
        if self.obs is None:  # a new run, or a checkpoint without the envs' state
            self.obs, _ = self.envs.reset(seed=cfg.seed + self.step)
            self.episode_log.start()
        obs, episode_success = self.obs, self.episode_success
        sps_clock, sps_step = time.perf_counter(), self.step
        bar = self._progress_bar(learning=self.step >= n.warmup)
        eta = LearningSpeed(n.total, self._write_above_bar, self._evaluations_left)
        while self.step < n.total and not stop.received:
            prev_step, self.step = self.step, self.step + k
            log_now = crossed(prev_step, self.step, n.log_every)
            clock = time.perf_counter()
            learning = prev_step >= n.warmup and self.buffer.size > 0
            if learning and eta.start_step is None:  # the first learning step of this process
                if bar.total != n.total:  # the warm-up bar's rate would make the ETA far too short
                    bar.close()
                    bar = self._progress_bar(learning=True, initial=prev_step)
                eta.start(prev_step)
            actions = (env_actions(self.agent.act(obs), cfg.agent.clip_actions) if learning
                       else self.envs.action_space.sample())
            if learning and not np.isfinite(actions).all():  # already on the host: costs no sync
                self._check_finite()  # names the update that went wrong, if the watch saw it
                self._stop_non_finite(f"non-finite actions (NaN or inf) from the policy at step {self.step}")
            self.episode_log.record(actions)
            pending = step_async(self.envs, actions)
            self.timing["act"] += time.perf_counter() - clock

            clock = time.perf_counter()
            if learning:
                for u in range(updates_at(prev_step, n.warmup, k, cfg.train.updates_per_step,
                                          cfg.train.warmup_burst)):
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
            self.buffer.add(obs, actions, rewards, true_next_obs(next_obs, infos),
                            stored_terminated(terminated, truncated, cfg.train.truncation_as_done))
            done = terminated | truncated
            self.episode_log.step_done(done)
            episode_success |= self._step_success(infos, done)
            self._log_finished_episodes(writer, infos, done, episode_success)
            obs = self.obs = next_obs
            bar.update(k)
            if learning:
                eta.observe(self.step)

            if log_now:
                now = time.perf_counter()
                writer.add_scalar("charts/SPS", (self.step - sps_step) / (now - sps_clock), self.step)
                sps_clock, sps_step = now, self.step
            paused = False
            if crossed(prev_step, self.step, n.eval_every) and self.step < n.total:
                result = self._evaluate(writer, cfg.eval.episodes)
                bar.set_postfix(success=f"{result.mean_success_rate:.2f}")
                paused = True
            if self.videos is not None and crossed(prev_step, self.step, cfg.video.every):
                self._check_finite()
                self.videos(self.agent, self.step)
                paused = True
            if crossed(prev_step, self.step, n.checkpoint_every) and self.step < n.total:
                self.save()
                paused = True
            if paused:  # the bar's rate (and ETA) counts training steps only, not this pause
                bar.unpause()
                eta.pause_ended()
        bar.close()

    def _evaluations_left(self, step: int) -> tuple[int, float]:
        """The evaluations after ``step`` (periodic ones and the final one) and their seconds, estimated
        from the time one vector step of acting and stepping the envs has taken so far."""
        n, e = self.lengths, self.cfg.eval
        periodic = max(0, (n.total - 1) // n.eval_every - step // n.eval_every)
        vector_steps = max(1, self.step // self.num_tasks)
        per_step = (self.timing["env"] + self.timing["act"]) / vector_steps
        episode = self.cfg.benchmark.max_episode_steps * per_step
        return periodic + 1, episode * (periodic * e.episodes + e.final_episodes)

    def _write_above_bar(self, line: str) -> None:
        """Print a line of its own above the progress bar (not onto the bar's line)."""
        with tqdm.external_write_mode():
            self.out(line)

    def _progress_bar(self, learning: bool, initial: int | None = None) -> tqdm:
        """The bar of one phase: warm-up (to ``warmup``) or learning (to ``total``), each with its own rate."""
        n = self.lengths
        end = n.total if learning or n.warmup >= n.total else n.warmup
        return tqdm(total=end, initial=self.step if initial is None else initial, unit="step", unit_scale=True, dynamic_ncols=True,
                    disable=not self.cfg.train.progress, mininterval=1.0, desc="learning" if learning else "warm-up")

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

    def _final_evaluation(self, writer: SummaryWriter) -> EvalResult:
        """The final evaluation; a run resumed from its final checkpoint (killed before results.json) has it."""
        last = self.evals[-1] if self.evals else None
        if last is not None and last.step == self.step >= self.lengths.total \
                and last.episodes == self.cfg.eval.final_episodes:  # periodic evaluations stop before the end
            return last
        return self._evaluate(writer, self.cfg.eval.final_episodes)

    def _write_evals(self) -> None:
        write_text(self.run_dir / EVALS_FILE, "".join(json.dumps(e.to_dict()) + "\n" for e in self.evals))

    def _results(self, final: EvalResult) -> dict:
        return {
            "benchmark": self.cfg.benchmark.label,
            "aggregator": self.cfg.aggregator.name,
            "network": self.cfg.agent.network,
            "seed": self.cfg.seed,
            "step": self.step,
            "total_steps": self.lengths.total,
            "finished": self.step >= self.lengths.total,
            "tasks": self.task_names,
            **final.to_dict(),
        }
