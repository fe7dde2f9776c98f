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
as a whole, and its checkpoints are committed together (all written, then all renamed).
A NaN/inf in any member stops the population with a line naming the member.
"""

from __future__ import annotations

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
from mtrl_famo.run_files import CONFIG_FILE, RESULTS_FILE
from mtrl_famo.stacked_sac import StackedMTSAC
from mtrl_famo.train import Trainer, crossed
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
    seeds = list(node.seeds)
    population_dir = run_dir or node.run_dir or default_population_dir(OmegaConf.to_object(node))
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
    if configs[0].train.compile != "none":
        raise ConfigError(f"train.compile={configs[0].train.compile!r} is not supported with seeds=[...] (the "
                          f"population's update is vmapped over members); allowed: none")
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
        # Each member is built as its single run builds it (seeding, envs, networks, buffer).
        self.members = [Trainer(c, out=lambda line, s=c.seed: out(f"[seed {s}] {line}")) for c in configs]
        self.cfg = self.members[0].cfg
        self.lengths = self.members[0].lengths
        self.num_tasks = self.members[0].num_tasks
        self.agent = StackedMTSAC([m.agent for m in self.members])
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
        else:
            for m in members:
                (m.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(m.cfg)))
        writers = [SummaryWriter(str(m.run_dir / "tb")) for m in members]
        if not resume:
            for m, w in zip(members, writers):
                w.add_text("hyperparameters", "```yaml\n" + OmegaConf.to_yaml(OmegaConf.structured(m.cfg)) + "```")
        try:
            self._loop(writers)
            self._check_finite()
            self.agent.write_back()
            finals = [m._evaluate(w, m.cfg.eval.final_episodes) for m, w in zip(members, writers)]
            results = [m._results(final) for m, final in zip(members, finals)]
            for m, r in zip(members, results):
                write_json(m.run_dir / RESULTS_FILE, r)
            self.save()
        finally:
            for m, w in zip(members, writers):
                w.close()
                m.envs.close()
                m.eval_envs.close()
        for m, final in zip(members, finals):
            m.out(f"mean success {final.mean_success_rate:.2f}; results written to {m.run_dir / RESULTS_FILE}")
        return results

    def _loop(self, writers: list[SummaryWriter]) -> None:
        """:meth:`Trainer._loop` for every member, with one stacked update per update step."""
        members, cfg, n, k = self.members, self.cfg, self.lengths, self.num_tasks
        obs = np.stack([m.envs.reset(seed=m.cfg.seed + self.step)[0] for m in members])  # [N, k, obs_dim]
        episode_success = [np.zeros(k, dtype=bool) for _ in members]
        sps_clock, sps_step = time.perf_counter(), self.step
        bar = tqdm(total=n.total, initial=self.step, unit="step", unit_scale=True, dynamic_ncols=True,
                   disable=not cfg.train.progress, mininterval=1.0, desc=f"{len(members)} seeds")
        while self.step < n.total:
            prev_step, self.step = self.step, self.step + k
            for m in members:
                m.step = self.step
            log_now = crossed(prev_step, self.step, n.log_every)
            clock = time.perf_counter()
            learning = prev_step >= n.warmup and members[0].buffer.size > 0
            if learning:
                actions = self.agent.act(obs)  # [N, k, act_dim]
                for m, a in zip(members, actions):
                    if not np.isfinite(a).all():
                        self._check_finite()
                        self._stop(m, f"non-finite actions (NaN or inf) from the policy at step {self.step}")
            else:
                actions = np.stack([m.envs.action_space.sample() for m in members])
            pending = [step_async(m.envs, a) for m, a in zip(members, actions)]
            self.timing["act"] += time.perf_counter() - clock

            clock = time.perf_counter()
            if learning:
                for u in range(cfg.train.updates_per_step):
                    batch = self.agent.sample([m.buffer for m in members], cfg.train.per_task_batch)
                    metrics = self.agent.update(batch, diagnostics=log_now and u == 0)
                    for i, m in enumerate(members):
                        m.nonfinite.observe({key: metrics[key][i] for key in m.nonfinite.keys}, self.step)
                    if log_now and u == 0:
                        self._check_finite()
                        for i, (m, w) in enumerate(zip(members, writers)):
                            m._log_update(w, {key: value[i] for key, value in metrics.items()})
            self.timing["update"] += time.perf_counter() - clock

            next_obs = []
            for i, (m, w) in enumerate(zip(members, writers)):
                clock = time.perf_counter()
                member_obs, rewards, terminated, truncated, infos = step_wait(m.envs, pending[i])
                self.timing["env"] += time.perf_counter() - clock
                m.buffer.add(obs[i], actions[i], rewards, true_next_obs(member_obs, infos), terminated)
                done = terminated | truncated
                episode_success[i] |= m._step_success(infos, done)
                m._log_finished_episodes(w, infos, done, episode_success[i])
                next_obs.append(member_obs)
            obs = np.stack(next_obs)
            bar.update(k)

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
