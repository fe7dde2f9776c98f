"""Sweeps over seeds, aggregators and any other key: ``mtrl-famo train --multirun k=a,b ...``.

Hydra's multirun expands the grid and hands the jobs to a launcher: the basic one
(sequential), ``hydra/launcher=local`` (joblib worker processes on this machine) or
``hydra/launcher=slurm`` (submitit on a SLURM cluster). Each job trains in
``<hydra.sweep.dir>/<its overrides>``; a job whose run finished is skipped and one
with a checkpoint is resumed, so starting an interrupted sweep again (same
``hydra.sweep.dir``) completes it.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mtrl_famo import runconfig
from mtrl_famo.config import ConfigError, register_schemas
from mtrl_famo.run_lock import lock_run_dir, unlock_run_dir
from mtrl_famo.runtime import SMALL_MACHINE_CORES


def expand_grid(overrides: Sequence[str]) -> list[list[str]]:
    """Every combination of the sweep overrides (``seed=0,1``), ``hydra.*`` left out.

    :raises ConfigError: for an override Hydra cannot parse.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(
            [o for o in overrides if not runconfig.override_key(o).startswith("hydra")])
    except Exception as exc:  # hydra's OverrideParseException and friends
        raise ConfigError(f"cannot parse sweep overrides: {str(exc).splitlines()[0]}") from None
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


MAX_NAME_BYTES = 255  # the longest file name most file systems allow


def job_folder_name(combo: Sequence[str]) -> str:
    """The folder Hydra names a job after: its overrides, sorted, joined by commas (``override_dirname``),
    without the keys ``configs/config.yaml`` excludes."""
    excluded = OmegaConf.load(runconfig.config_dir() / "config.yaml").hydra.job.config.override_dirname.exclude_keys
    return ",".join(sorted(o for o in combo if runconfig.override_key(o) not in excluded))


def check_grid(grid: list[list[str]], overrides: Sequence[str] = ()) -> None:
    """:raises ConfigError: a sweep whose jobs would share one ``run_dir``, or name a folder too long to create."""
    if len(grid) > 1 and any(runconfig.override_key(o) == "run_dir" for o in grid[0]):
        raise ConfigError(f"run_dir= would send all {len(grid)} jobs of the sweep to one folder; leave it out "
                          f"(each job trains in <hydra.sweep.dir>/<its overrides>) and set hydra.sweep.dir=DIR")
    if any(runconfig.override_key(o) == "hydra.sweep.subdir" for o in overrides):
        return  # the user names the job folders
    for combo in grid:
        name = job_folder_name(combo)
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"a job's folder name, its overrides {name[:60]!r}..., is {len(name.encode())} "
                              f"bytes, over the {MAX_NAME_BYTES} a file name may have; move fixed settings into "
                              f"an experiment= preset or set hydra.sweep.subdir='${{hydra.job.num}}'")


class SweepStopped(BaseException):
    """SIGINT/SIGTERM stopped a sweep's job after its checkpoint: the whole sweep stops.

    A ``BaseException``: Hydra's job runner catches ``Exception`` from a job and starts the
    next one, so a Ctrl-C would stop one job only.
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def sweep_dir_override(overrides: Sequence[str]) -> str | None:
    """The value of ``hydra.sweep.dir=`` on the command line, if given."""
    values = [o.split("=", 1)[1] for o in overrides if "=" in o and runconfig.override_key(o) == "hydra.sweep.dir"]
    return values[-1] if values else None


def worker_threads(n_jobs: int, cores: int | None = None) -> int:
    """Torch threads of one of ``n_jobs`` parallel workers: the single run's rule (``configure_threads``)
    on the worker's share of the cores, 1 thread on a share of up to 4 cores, else the share."""
    cores = cores or os.cpu_count() or 1
    share = max(1, cores // max(1, n_jobs))
    return 1 if share <= SMALL_MACHINE_CORES else share


def run_sweep(args: Sequence[str]) -> int:
    """Validate every job's config, then run the grid through Hydra's multirun.

    :return: the exit code: 0, or 128 + the signal that stopped the sweep (after the running
        job's checkpoint; no further job starts).
    """
    overrides = [a for a in args if a not in runconfig.MULTIRUN_FLAGS]
    grid = expand_grid(overrides)
    for combo in grid:
        runconfig.compose_config(combo)  # bad input fails here, before any job starts
    check_grid(grid, overrides)
    sweep_dir = sweep_dir_override(overrides)
    if sweep_dir is not None:
        runconfig.check_run_dir(Path(sweep_dir), key="hydra.sweep.dir")
    register_schemas()

    @hydra.main(config_path=str(runconfig.config_dir()), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> float:
        return run_sweep_job(cfg)

    saved_argv = sys.argv
    sys.argv = ["mtrl-famo", "--multirun", *overrides]
    try:
        job()
    except SweepStopped as stopped:
        print(f"mtrl-famo train: {stopped}", file=sys.stderr)
        return stopped.exit_code
    finally:
        sys.argv = saved_argv
    return 0


def run_sweep_job(job_cfg: DictConfig) -> float:
    """One job of a sweep: train (or resume, or skip) in the job's own output folder.

    :param job_cfg: the job's config, composed by Hydra.
    :return: the run's final mean success rate (Hydra keeps it as the job's return value).
    :raises SweepStopped: SIGINT or SIGTERM stopped the job (after its checkpoint).
    """
    from mtrl_famo.train import TrainingInterrupted
    from mtrl_famo.video.gl import guard_user_backend

    guard_user_backend()  # a worker process imports MuJoCo itself
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    given = {runconfig.override_key(o) for o in overrides}
    cfg = OmegaConf.to_object(job_cfg)
    if "run_dir" not in given:
        cfg.run_dir = hc.runtime.output_dir
    if "train.progress" not in given:
        cfg.train.progress = False  # parallel bars would interleave
    if "train.torch_threads" not in given:
        n_jobs = OmegaConf.select(hc, "launcher.n_jobs", default=1) or 1
        n_jobs = os.cpu_count() if n_jobs < 0 else n_jobs
        cfg.train.torch_threads = worker_threads(n_jobs)
    try:
        return _train_job(cfg, job_cfg, overrides)
    except TrainingInterrupted as exc:
        signame = signal.Signals(exc.exit_code - 128).name if exc.exit_code > 128 else "a signal"
        raise SweepStopped(f"{signame} stopped the sweep in {cfg.run_dir} after its checkpoint; no further job "
                           f"was started. Resume the sweep with the same command (same hydra.sweep.dir): finished "
                           f"runs are skipped, this one resumes", exc.exit_code) from None


def _train_job(cfg, job_cfg: DictConfig, overrides: list[str]) -> float:
    """Train one job's run (or population); its final mean success rate."""
    from mtrl_famo.train import Trainer

    if cfg.seeds is not None:  # a population per job: members in <job dir>/s<seed>
        from mtrl_famo.population import run_population

        settings = {"progress": cfg.train.progress, "torch_threads": cfg.train.torch_threads}
        results = run_population(overrides, job_cfg, run_dir=cfg.run_dir, train_settings=settings)
        return float(sum(r["mean_success_rate"] for r in results) / len(results))
    cfg, resume = runconfig.train_config(overrides, composed=cfg)
    runconfig.check_machine(cfg)
    finished = runconfig.finished_results(cfg)
    if finished is not None:
        print(f"{cfg.run_dir}: already finished at step {finished['step']}, skipped")
        return float(finished["mean_success_rate"])
    lock_run_dir(cfg.run_dir)
    try:
        return float(Trainer(cfg).run(resume=resume)["mean_success_rate"])
    finally:
        unlock_run_dir(cfg.run_dir)
