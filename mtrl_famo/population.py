"""Populations: many seeds of one configuration trained in one process (``seeds=[0,1,2]``).

``mtrl-famo train seeds=[0,1,2] ...`` trains one member per seed. Each member is the
single run with that seed (``seed=s``, same other keys): its own networks, targets,
optimizers, temperatures, aggregator state, replay buffer, environments and random
streams, and its own ordinary run folder ``<run_dir>/s<seed>`` (config.yaml with its
seed, TensorBoard, evals.jsonl, checkpoint, results.json), so ``eval``, ``report``,
``video`` and a resume of one member work as for any run. What the members share is
the gradient update: one call over their stacked parameters
(:class:`~mtrl_famo.stacked_sac.StackedMTSAC`). Member ``i`` computes what the single
run with seed ``i`` computes, to float tolerance.

The loop below is :meth:`Trainer._loop <mtrl_famo.train.Trainer._loop>` for ``N``
members (a test trains both and compares them); each member's logging, evaluation and
checkpoint go through its own :class:`~mtrl_famo.train.Trainer`. A population resumes
as a whole, exactly as its members' single runs would (their envs' and loop's state is in
their checkpoints), and its checkpoints are committed together (all written, then all
renamed). Its folder and every member's folder are locked while it trains; SIGINT/SIGTERM
checkpoint every member and name the command that resumes. A NaN/inf in any member stops
the population with a line naming the member.
"""

from __future__ import annotations

import dataclasses

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from mtrl_famo import runconfig
from mtrl_famo.atomic import publish, write_json
from mtrl_famo.checkpoint import CheckpointError, checkpoint_path
from mtrl_famo.config import Config, ConfigError
from mtrl_famo.envs import step_async, step_wait, true_next_obs
from mtrl_famo.run_files import RESULTS_FILE
from mtrl_famo.run_lock import lock_run_dir, unlock_run_dir
from mtrl_famo.stacked_sac import StackedMTSAC
from mtrl_famo.step_rules import env_actions, stored_terminated, updates_at
from mtrl_famo.train import (LearningSpeed, StopSignals, Trainer, TrainingInterrupted, announce, crossed,
                             open_writer)
from mtrl_famo.video.periodic import PeriodicVideos

#: Keys a population sets per member; the rest of the command line is shared.
MEMBER_KEYS = ("seeds", "seed", "run_dir")


def default_population_dir(cfg: Config) -> str:
    """``runs/<benchmark>-<aggregator>``; members in ``s<seed>`` below it."""
    return f"runs/{cfg.benchmark.label}-{cfg.aggregator.name}"


def member_dir(population_dir: str | Path, seed: int) -> Path:
    return Path(population_dir) / f"s{seed}"


def population_configs(overrides: Sequence[str], node, run_dir: str | None = None,
                       train_settings: dict | None = None) -> tuple[list[Config], bool]:
    """The members' configs of a ``train`` call with ``seeds=[...]``, and whether it resumes.

    Member ``s`` is the config of the same command line with ``seed=s`` (interpolations
    such as PCGrad's ``seed: ${seed}`` follow it) and ``run_dir=<run_dir>/s<s>``.

    :param overrides: the command line's ``key=value`` overrides.
    :param node: the composed, unresolved config tree of ``overrides`` (a DictConfig).
    :param run_dir: the population's folder; default the ``run_dir`` override, else
        :func:`default_population_dir`.
    :param train_settings: ``train.*`` values set on every member (a sweep job's).
    :raises ConfigError: one line for bad input: ``seed`` and ``seeds`` together, a setting a
        population does not support, members of which some have a checkpoint and some not.
    """
    given = {runconfig.override_key(o) for o in overrides}
    if "seed" in given:
        raise ConfigError("seed= and seeds= given together; a population takes its members' seeds from "
                          "seeds=[...], give one of them")
    composed = OmegaConf.to_object(node)
    population_dir = run_dir or node.run_dir or default_population_dir(composed)
    if not any(checkpoint_path(member_dir(population_dir, s)).exists() for s in composed.seeds or []):
        runconfig.validate_run(composed)  # a new population: the command line is its config (a resumed one: below)
    seeds = list(node.seeds)
    member_overrides = [o for o in overrides if runconfig.override_key(o) not in MEMBER_KEYS]
    configs, resumes = [], []
    for seed in seeds:
        member_node = node.copy()
        with open_dict(member_node):
            member_node.seed, member_node.seeds = seed, None
            member_node.run_dir = str(member_dir(population_dir, seed))
            for key, value in (train_settings or {}).items():
                member_node.train[key] = value
        member = OmegaConf.to_object(member_node)
        member, resume = runconfig.train_config([*member_overrides, f"seed={seed}"], composed=member)
        configs.append(member)
        resumes.append(resume)
    if configs[0].train.compile not in ("none", "graph"):
        raise ConfigError(f"train.compile={configs[0].train.compile!r} is not supported with seeds=[...] (the "
                          f"population's update is vmapped over members, compiled whole or not at all); "
                          f"allowed: none, graph")
    if any(resumes) and not all(resumes):
        have = [c.seed for c, r in zip(configs, resumes) if r]
        raise ConfigError(f"population {population_dir}: members {have} have a checkpoint and "
                          f"{[c.seed for c, r in zip(configs, resumes) if not r]} do not; a population resumes "
                          f"as a whole (remove the members' folders to start again)")
    return configs, all(resumes)


def run_population(overrides: Sequence[str], node, run_dir: str | None = None, train_settings: dict | None = None,
                   out: Callable[[str], None] = print) -> list[dict]:
    """Train (or resume, or skip when finished) the population of a command line; each member's results."""
    configs, resume = population_configs(overrides, node, run_dir, train_settings)
    # the members differ only in their seeds and folders; the memory estimate counts them all
    runconfig.check_machine(dataclasses.replace(configs[0], seeds=[c.seed for c in configs]))
    # One process per population: its folder and every member's folder are locked (a member may be resumed alone).
    folders = [Path(configs[0].run_dir).parent, *(Path(c.run_dir) for c in configs)]
    try:
        for folder in folders:
            lock_run_dir(folder)
        return _run_locked(configs, resume, out)
    finally:
        for folder in folders:
            unlock_run_dir(folder)


def _run_locked(configs: list[Config], resume: bool, out: Callable[[str], None]) -> list[dict]:
    finished = [runconfig.finished_results(c) for c in configs]
    if all(f is not None for f in finished):
        for c, f in zip(configs, finished):
            out(f"{c.run_dir} already finished at step {f['step']} (mean success {f['mean_success_rate']:.2f})")
        return finished
    if any(f is not None for f in finished):
        raise ConfigError(f"population members {[c.seed for c, f in zip(configs, finished) if f is not None]} "
                          f"finished and the others did not; a population trains as a whole")
    return PopulationTrainer(configs, out=out).run(resume=resume)


class PopulationTrainer:
    """Trains ``N`` members of one configuration in one process, each with its own :class:`Trainer`.

    :param configs: the members' configs (from :func:`population_configs`); they differ
        only in their seeds and run folders.
    """

    def __init__(self, configs: Sequence[Config], out: Callable[[str], None] = print):
        self.out = out
        self.population_dir = Path(configs[0].run_dir).parent
        seeds = ",".join(str(c.seed) for c in configs)
        #: what resumes the population (its saved config is kept; seeds and folder name it).
        self.resume_command = f"mtrl-famo train 'seeds=[{seeds}]' run_dir={self.population_dir}"
        # Each member is built as its single run builds it (seeding, envs, networks, buffer).
        self.members = [Trainer(c, out=lambda line, s=c.seed: out(f"[seed {s}] {line}")) for c in configs]
        self.cfg = self.members[0].cfg
        self.lengths = self.members[0].lengths
        self.num_tasks = self.members[0].num_tasks
        self.agent = StackedMTSAC([m.agent for m in self.members], compile=self.cfg.train.compile == "graph")
        self.step = 0
        #: wall seconds spent choosing actions, in gradient updates and waiting for the envs (all members).
        self.timing = {"act": 0.0, "update": 0.0, "env": 0.0}

    # ---------------------------------------------------------------- checks and checkpoints
    def _check_finite(self) -> None:
        """Stop the population if any member's updates produced NaN/inf (one host sync per member)."""
        for member in self.members:
            try:
                member.nonfinite.check()
            except FloatingPointError as exc:
                self._stop(member, str(exc))

    def _stop(self, member: Trainer, problem: str) -> None:
        """Raise FloatingPointError naming ``member`` and what became of the checkpoints."""
        if all(checkpoint_path(m.run_dir).exists() for m in self.members):
            kept = "every member's last checkpoint is intact"
        else:
            kept = "no checkpoint was written"
        raise FloatingPointError(f"population member seed={member.cfg.seed} ({member.run_dir}): {problem}; "
                                 f"the population stopped, {kept}")

    def save(self) -> None:
        """Checkpoint every member, committed together: all written to temporary files, then all renamed."""
        self._check_finite()
        self.agent.write_back()
        pending: list[tuple[str, Path]] = []
        try:
            for member in self.members:
                if member.writer is not None:  # its events up to this step on disk before the checkpoint
                    member.writer.flush()
                path = checkpoint_path(member.run_dir)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                pending.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    torch.save(member.state_dict(), f)
                    f.flush()
                    os.fsync(f.fileno())
            for tmp, path in pending:
                publish(Path(tmp), path)  # the mode the user's umask gives a new file
        finally:
            for tmp, _ in pending:
                Path(tmp).unlink(missing_ok=True)

    def resume(self) -> None:
        """Load every member's checkpoint; they must be at the same step."""
        for member in self.members:
            member.resume()
        steps = {m.cfg.seed: m.step for m in self.members}
        if len(set(steps.values())) != 1:
            raise CheckpointError(f"the population's checkpoints are at different steps {steps} (seed: step); "
                                  f"resume the members one by one as single runs, or start the population again")
        self.step = self.members[0].step
        self.agent.load_from_members()

    # ---------------------------------------------------------------- loop
    def run(self, resume: bool = False) -> list[dict]:
        """Train every member to ``total`` steps (continuing from the checkpoints when ``resume``).

        SIGINT and SIGTERM stop the loop after the current step, checkpoint every member and
        raise :class:`~mtrl_famo.train.TrainingInterrupted`, as for a single run.

        :return: each member's results (what :meth:`Trainer.run` returns), in seed order.
        """
        members = self.members
        for m in members:
            m.videos = (PeriodicVideos(m.cfg, m.task_names, m.run_dir, m.out, m.eval_envs)
                        if m.cfg.video.every else None)
            m.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
            self.out(f"resuming the population of seeds {[m.cfg.seed for m in members]} from step {self.step}")
            for m in members:
                for note in m.resume_notes:
                    m.out(note)
        else:
            for m in members:
                m.start_fresh()
        announce(self.out, f"{self.population_dir} (seeds {[m.cfg.seed for m in members]})", self.cfg,
                 self.lengths, self.num_tasks, members[0].device, self.step)
        for m in members:
            m.writer = open_writer(m.run_dir, self.step if resume else None, m.cfg)
        writers = [m.writer for m in members]
        try:
            with StopSignals() as stop:
                self._loop(writers, stop)
                if stop.received:
                    self.save()
                    raise TrainingInterrupted(
                        f"stopped by {stop.received} at step {self.step:,}; every member's checkpoint saved in "
                        f"{self.population_dir}. Resume with: {self.resume_command}", stop.exit_code)
            self._check_finite()
            self.agent.write_back()
            finals = [m._final_evaluation(w) for m, w in zip(members, writers)]
            results = [m._results(final) for m, final in zip(members, finals)]
            self.save()  # the final weights first: results.json says "finished" only once they are safe
            for m, r in zip(members, results):
                write_json(m.run_dir / RESULTS_FILE, r)
        finally:
            for m, w in zip(members, writers):
                w.close()
                m.envs.close()
                m.eval_envs.close()
        for m, final in zip(members, finals):
            self.out(f"seed {m.cfg.seed} ({m.run_dir}):\n{final.table()}")
        self.out(f"mean success over the seeds {np.mean([f.mean_success_rate for f in finals]):.2f}; results "
                 f"written to {', '.join(str(m.run_dir / RESULTS_FILE) for m in members)}")
        return results

    def _progress_bar(self, learning: bool, initial: int) -> tqdm:
        """The bar of one phase, as :meth:`Trainer._progress_bar`: warm-up, then learning, each with its rate."""
        n = self.lengths
        end = n.total if learning or n.warmup >= n.total else n.warmup
        return tqdm(total=end, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                    disable=not self.cfg.train.progress, mininterval=1.0,
                    desc=f"{len(self.members)} seeds, {'learning' if learning else 'warm-up'}")

    def _loop(self, writers: list[SummaryWriter], stop: StopSignals) -> None:
        """:meth:`Trainer._loop` for every member, with one stacked update per update step."""
        members, cfg, n, k = self.members, self.cfg, self.lengths, self.num_tasks
        for m in members:
            if m.obs is None:  # a new run, or a checkpoint without the envs' state
                m.obs = m.envs.reset(seed=m.cfg.seed + self.step)[0]
                m.episode_log.start()
        obs = np.stack([m.obs for m in members])  # [N, k, obs_dim]
        sps_clock, sps_step = time.perf_counter(), self.step
        bar = self._progress_bar(self.step >= n.warmup, self.step)
        eta = LearningSpeed(n.total, self.out)
        while self.step < n.total and not stop.received:
            prev_step, self.step = self.step, self.step + k
            for m in members:
                m.step = self.step
            log_now = crossed(prev_step, self.step, n.log_every)
            clock = time.perf_counter()
            learning = prev_step >= n.warmup and members[0].buffer.size > 0
            if learning and eta.start_step is None:  # the first learning step of this process
                if bar.total != n.total:  # the warm-up bar's rate would make the ETA far too short
                    bar.close()
                    bar = self._progress_bar(True, prev_step)
                eta.start(prev_step)
            if learning:
                actions = env_actions(self.agent.act(obs), cfg.agent.clip_actions)  # [N, k, act_dim]
                for m, a in zip(members, actions):
                    if not np.isfinite(a).all():
                        self._check_finite()
                        self._stop(m, f"non-finite actions (NaN or inf) from the policy at step {self.step}")
            else:
                actions = np.stack([m.envs.action_space.sample() for m in members])
            for m, a in zip(members, actions):
                m.episode_log.record(a)
            pending = [step_async(m.envs, a) for m, a in zip(members, actions)]
            self.timing["act"] += time.perf_counter() - clock

            clock = time.perf_counter()
            if learning:
                for u in range(updates_at(prev_step, n.warmup, k, cfg.train.updates_per_step,
                                          cfg.train.warmup_burst)):
                    batch = self.agent.sample([m.buffer for m in members], cfg.train.per_task_batch)
                    metrics = self.agent.update(batch, diagnostics=log_now and u == 0)
                    for i, m in enumerate(members):
                        m.nonfinite.observe({key: metrics[key][i] for key in m.nonfinite.keys}, self.step)
                    if log_now and u == 0:
                        self._check_finite()
                        for i, (m, w) in enumerate(zip(members, writers)):
                            m._log_update(w, {key: value[i] for key, value in metrics.items()})
            self.timing["update"] += time.perf_counter() - clock

            for i, (m, w) in enumerate(zip(members, writers)):
                clock = time.perf_counter()
                member_obs, rewards, terminated, truncated, infos = step_wait(m.envs, pending[i])
                self.timing["env"] += time.perf_counter() - clock
                m.buffer.add(obs[i], actions[i], rewards, true_next_obs(member_obs, infos),
                             stored_terminated(terminated, truncated, cfg.train.truncation_as_done))
                done = terminated | truncated
                m.episode_log.step_done(done)
                m.episode_success |= m._step_success(infos, done)
                m._log_finished_episodes(w, infos, done, m.episode_success)
                m.obs = member_obs
            obs = np.stack([m.obs for m in members])
            bar.update(k)
            if learning:
                eta.observe(self.step)

            if log_now:
                now = time.perf_counter()
                for w in writers:
                    w.add_scalar("charts/SPS", (self.step - sps_step) / (now - sps_clock), self.step)
                sps_clock, sps_step = now, self.step
            if crossed(prev_step, self.step, n.eval_every) and self.step < n.total:
                self._check_finite()
                self.agent.write_back()
                results = [m._evaluate(w, cfg.eval.episodes) for m, w in zip(members, writers)]
                bar.set_postfix(success=f"{np.mean([r.mean_success_rate for r in results]):.2f}")
            if cfg.video.every and crossed(prev_step, self.step, cfg.video.every):
                self._check_finite()
                self.agent.write_back()
                for m in members:
                    m.videos(m.agent, self.step)
            if crossed(prev_step, self.step, n.checkpoint_every) and self.step < n.total:
                self.save()
        bar.close()
