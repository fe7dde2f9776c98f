"""The ``mtrl-famo`` command line: ``train``, ``eval`` (and more subcommands as they land).

Arguments are Hydra-style overrides (``key=value``, ``group=option``) on the
config tree in ``configs/``. Bad input gets one line on stderr naming the value
and what is allowed, and exit code 2, before any heavy work starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence


from mtrl_famo import runconfig
from mtrl_famo.run_files import CheckpointError
from mtrl_famo.config import ConfigError

USAGE = """usage: mtrl-famo COMMAND [key=value ...]

commands:
  train   train an MT-SAC agent (resumes when run_dir holds a checkpoint);
          with --multirun, a sweep over comma-separated values (Hydra multirun)
  eval    evaluate a run's latest checkpoint: mtrl-famo eval run_dir=DIR [eval.episodes=50]
  report  tables and plots across runs and seeds: mtrl-famo report RUN_DIR... [--out DIR]
  video   videos of a run's policy: mtrl-famo video run_dir=DIR [task=NAME] [episodes=1] [out=DIR]

examples:
  mtrl-famo train
  mtrl-famo train benchmark=mt50 aggregator=famo seed=3 device=cpu train.total_steps=20000 train.warmup_steps=5000 run_dir=runs/x
  mtrl-famo train benchmark=mt1 benchmark.env_name=reach-v3
  mtrl-famo train seeds=[0,1,2] run_dir=runs/pop    (a population: runs/pop/s0, s1, s2 in one process)
  mtrl-famo eval run_dir=runs/x eval.episodes=50
  mtrl-famo train --multirun hydra/launcher=local hydra.sweep.dir=sweeps/s aggregator=mean,famo seed=0,1
  mtrl-famo report runs/ --out report/
  mtrl-famo video run_dir=runs/x task=reach-v3

`mtrl-famo train --help` lists every config key."""


class UsageError(Exception):
    """Bad command-line input; reported as one line with exit code 2."""


def _help_text() -> str:
    groups = ", ".join(f"{g}={{{','.join(runconfig.group_options(g))}}}" for g in runconfig.GROUPS)
    return "\n".join([USAGE, "", f"config groups: {groups}", "",
                      "config keys (defaults of `mtrl-famo train`, i.e. benchmark=mt10 aggregator=mean):",
                      *runconfig.config_help(), "", *_sweep_help()])


def _sweep_help() -> list[str]:
    """Hydra's keys of a sweep (``--multirun``): the launcher group and the ``hydra.*`` keys our configs set."""
    import yaml

    launchers = runconfig.group_options("hydra/launcher")
    sweep = yaml.safe_load((runconfig.config_dir() / "config.yaml").read_text())["hydra"]["sweep"]
    lines = ["sweep keys (with --multirun; Hydra's, see https://hydra.cc/docs/intro/):",
             f"  hydra/launcher={{{','.join(launchers)}}}".ljust(40) + "  basic (default: one job after another in "
             "this process), local (joblib worker processes) or slurm (submitit jobs on a SLURM cluster)",
             f"  hydra.sweep.dir={sweep['dir']}".ljust(40) + "  the sweep's folder; the same one again resumes it",
             f"  hydra.sweep.subdir={sweep['subdir']}".ljust(40) + "  each job's folder in it (its overrides)"]
    for launcher in launchers:
        node = yaml.safe_load((runconfig.config_dir() / "hydra" / "launcher" / f"{launcher}.yaml").read_text())
        for key, value in node.items():
            if key != "defaults":
                what = "jobs at a time" if key == "n_jobs" else "the SLURM job's resource (submitit)"
                lines.append(f"  hydra.launcher.{key}={value}".ljust(40) + f"  (hydra/launcher={launcher}) {what}")
    return lines


EVAL_USAGE = "usage: mtrl-famo eval run_dir=DIR [eval.episodes=50] [device=cpu]"


def _eval_help_text() -> str:
    """``mtrl-famo eval --help``: the keys eval takes (the run's saved config gives everything else)."""
    return "\n".join([
        EVAL_USAGE, "",
        "Evaluates the deterministic policy of a run's latest checkpoint on every task of the run, prints",
        "the per-task table and writes DIR/eval.json; the run's saved config gives everything else.", "",
        "  run_dir=DIR".ljust(40) + "  a folder written by `mtrl-famo train` (holds checkpoint.pt)",
        "  eval.episodes=N".ljust(40) + "  episodes per task (default: the run's eval.final_episodes, 50)",
        "  device=auto".ljust(40) + "  auto (CUDA when present), cpu, cuda or cuda:N"])


def train_command(overrides: list[str]) -> int:
    if any(flag in overrides for flag in runconfig.MULTIRUN_FLAGS):
        from mtrl_famo.sweep import run_sweep

        return run_sweep(overrides)
    composed = runconfig.compose_config(overrides, check=False)
    if composed.seeds is not None:  # a population: one member per seed, in one process
        from mtrl_famo.population import run_population

        from mtrl_famo.train import TrainingInterrupted

        try:  # each member's config (a resumed one is its saved config) is validated and checked there
            run_population(overrides, runconfig.compose_node(overrides))
        except TrainingInterrupted as exc:
            print(f"mtrl-famo train: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    cfg, resume = runconfig.train_config(overrides, composed=composed)
    runconfig.check_machine(cfg)
    finished = runconfig.finished_results(cfg)
    if finished is not None:
        print(f"{cfg.run_dir} already finished at step {finished['step']} "
              f"(mean success {finished['mean_success_rate']:.2f}); raise train.total_steps to extend it")
        return 0
    from mtrl_famo.run_lock import lock_run_dir
    from mtrl_famo.train import Trainer, TrainingInterrupted, load_resume_state  # heavy imports, after the checks

    state = load_resume_state(cfg) if resume else None  # a corrupt checkpoint is found before the envs are built
    lock_run_dir(Path(cfg.run_dir))
    try:
        Trainer(cfg).run(resume=resume, state=state)
    except TrainingInterrupted as exc:
        print(f"mtrl-famo train: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def eval_command(overrides: list[str]) -> int:
    cfg = runconfig.eval_config(overrides)
    runconfig.check_machine(cfg)
    from mtrl_famo.atomic import write_json
    from mtrl_famo.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, progress=True)
    out_path = Path(cfg.run_dir) / "eval.json"
    write_json(out_path, result.to_dict())
    print(result.table())
    print(f"written to {out_path}")
    return 0


def report_command(args: list[str]) -> int:
    from mtrl_famo.report.command import main  # matplotlib, scipy: only for this command

    return main(args)


def video_command(args: list[str]) -> int:
    from mtrl_famo.video.command import main

    return main(args)


COMMANDS = {"train": train_command, "eval": eval_command, "report": report_command, "video": video_command}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help_text() if argv else USAGE)
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"mtrl-famo: error: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if command in ("train", "eval") and ("-h" in overrides or "--help" in overrides):
        print(_help_text() if command == "train" else _eval_help_text())
        return 0
    if command in ("train", "eval"):
        from mtrl_famo.video.gl import guard_user_backend

        guard_user_backend()  # a broken MUJOCO_GL must not crash a command that renders nothing
    try:
        return COMMANDS[command](overrides)
    except (ConfigError, CheckpointError, UsageError) as exc:
        print(f"mtrl-famo {command}: error: {exc}", file=sys.stderr)
        return 2
    except (FloatingPointError, OSError) as exc:  # a diverged run; a full disk or another I/O fault
        print(f"mtrl-famo {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside the training loop (which saves first), or Ctrl-C twice
        print(f"mtrl-famo {command}: interrupted; nothing was saved since the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
