"""Every ``mtrl-famo`` command in the README and in ``mtrl-famo --help`` works (issue 26).

Each command is first validated as written (its config composed and checked at full scale:
the README's MT50 example was refused for its warm-up), then run for real at tiny scale: the
same keys with smaller numbers (networks of width 32, a few hundred steps, one evaluation
episode, two seeds and two values per swept key), plus the tiny budget keys of
``conftest.TINY``. Commands run in one temporary folder, in order, so ``eval run_dir=runs/x``
finds the run an earlier example trained. The SLURM sweep is validated only: this machine has
no cluster to submit to.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mtrl_famo import cli, runconfig
from mtrl_famo.config import TASKS_PER_BENCHMARK

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"\bDIR\b|\bNAME\b|RUN_DIR|\.\.\.|\[key=value|k=a,b|\bN\b")


def readme_commands() -> list[str]:
    """``mtrl-famo`` commands of the README's code blocks (continuations joined, comments dropped) and
    of its inline code, without the usage synopses that hold placeholders (``run_dir=DIR``)."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```(?:bash|text)\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.split(r"\s#|\s{3,}", line.strip())[0].strip()  # a comment, or a synopsis' description
            if "mtrl-famo " in line:
                commands.append(line[line.index("mtrl-famo "):])
    # Inline code: commands, not mentions of a subcommand (`mtrl-famo eval`).
    commands += [c for c in re.findall(r"`(mtrl-famo [^`]+)`", text) if len(c.split()) > 2]
    return [c for c in commands if not PLACEHOLDER.search(c)]


def help_commands() -> list[str]:
    """The ``examples:`` of ``mtrl-famo --help``."""
    examples = cli.USAGE.split("examples:")[1].split("\n\n")[0]
    return [line.strip().split("  (")[0].split("    (")[0].strip() for line in examples.splitlines() if line.strip()]


TINY_KEYS = {  # the budget keys of conftest.TINY, added where a command does not set them
    "device": "cpu", "train.per_task_batch": "8", "train.warmup_steps": "100", "train.buffer_size": "20000",
    "train.log_every": "200", "train.progress": "false", "eval.episodes": "1", "eval.final_episodes": "1",
    "benchmark.max_episode_steps": "50",
}


def tiny(command: str) -> list[str]:
    """The arguments of ``command`` at tiny scale: its keys kept, their numbers smaller."""
    words = shlex.split(command)[1:]
    if words[0] == "eval":
        return [w if not w.startswith("eval.episodes=") else "eval.episodes=1" for w in words]
    if words[0] != "train" or "--help" in words:
        return words
    args, keys = [], set()
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if key in ("train.total_steps", "train.warmup_steps", "eval.every", "eval.episodes", "hydra.launcher.n_jobs"):
            continue  # the tiny ones below
        keys.add(runconfig.override_key(word))
        if key == "agent.hidden_sizes":
            value = "[" + ",".join("32" for _ in value.strip("[]").split(",")) + "]"
        elif key == "seeds":
            value = "[" + ",".join(value.strip("[]").split(",")[:2]) + "]"
        elif sep and "," in value and not value.startswith("[") and "--multirun" in words:
            value = ",".join(value.split(",")[:2])  # a swept key: two values
        args.append(f"{key}{sep}{value}")
    benchmark = next((a.split("=", 1)[1] for a in args if a.startswith("benchmark=")), "mt10")
    k = TASKS_PER_BENCHMARK[benchmark]
    budget = {**TINY_KEYS, "train.total_steps": str(100 + 3 * k), "eval.every": "100000",
              "agent.hidden_sizes": "[32,32]"}
    if "--multirun" in words:
        budget["hydra.sweep.subdir"] = "${hydra.job.num}"  # the tiny keys would make too long a folder name
        if any(a.startswith("hydra/launcher=local") for a in args):
            budget["hydra.launcher.n_jobs"] = "2"
    return ["train", *args] + [f"{key}={value}" for key, value in budget.items() if key not in keys]


def validate_as_written(command: str) -> None:
    """Compose and check the command's config(s) at full scale, as ``mtrl-famo`` does before any work."""
    words = shlex.split(command)[1:]
    if words[0] != "train" or "--help" in words:
        return
    overrides = [w for w in words[1:] if w not in runconfig.MULTIRUN_FLAGS]
    if "--multirun" in words:
        from mtrl_famo.sweep import check_grid, expand_grid

        grid = expand_grid(overrides)
        for combo in grid:
            runconfig.compose_config(combo)
        check_grid(grid, overrides)
    else:
        runconfig.compose_config(overrides)


def ordered(commands: list[str]) -> list[str]:
    """Unique commands, those that train first (eval, report and video read their runs)."""
    unique = list(dict.fromkeys(commands))
    return sorted(unique, key=lambda c: shlex.split(c)[1] != "train")


def test_the_readme_and_help_hold_commands():
    readme, helps = readme_commands(), help_commands()
    assert len(readme) >= 20 and len(helps) == 8
    assert "mtrl-famo train" in helps and "mtrl-famo report runs/ --out report/" in readme


def shape(command: str) -> tuple:
    """What a train command exercises beyond its config (checked as written for every command): its
    benchmark, a sweep and its launcher, a population. One run per shape keeps the suite's time in
    bounds; the presets, protocols and networks are composed and checked for every command, and each
    network trains from the CLI in tests/test_architectures.py."""
    words = shlex.split(command)[1:]
    if words[0] != "train":
        return (command,)  # eval, report and video: each runs
    value = lambda key: next((w.split("=", 1)[1] for w in words if w.startswith(key)), None)  # noqa: E731
    return ("train", value("benchmark="), "--multirun" in words, value("seeds=") is not None,
            value("hydra/launcher="), "--help" in words)


def test_every_documented_command_runs(tmp_path, monkeypatch, capsys):
    shapes = set()
    for i, command in enumerate(ordered(readme_commands() + help_commands())):
        # A run without run_dir= goes to runs/<benchmark>-<aggregator>-s<seed>: the examples that differ in
        # other keys (a protocol) would meet there, so each trains in a folder of its own; the others share
        # tmp_path, where eval, video and report find runs/x.
        alone = shlex.split(command)[1] == "train" and "run_dir=" not in command and "--multirun" not in command
        monkeypatch.chdir(tmp_path)
        try:
            validate_as_written(command)
        except Exception as exc:
            pytest.fail(f"{command!r} is refused as written: {exc}")
        args = tiny(command)
        if "hydra/launcher=slurm" in args:
            continue  # validated above; there is no SLURM cluster to submit to here
        if shape(command) in shapes and "run_dir=" not in command:
            continue  # validated above; a command of its shape has run (eval, report, video read runs/x)
        shapes.add(shape(command))
        if alone:
            (tmp_path / f"alone{i}").mkdir()
            monkeypatch.chdir(tmp_path / f"alone{i}")
        code = cli.main(args)
        out, err = capsys.readouterr()
        assert code == 0, f"{command!r} as {' '.join(args)!r} exited {code}: {err[-2000:]}"
