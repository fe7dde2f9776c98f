"""From command-line overrides to a validated :class:`~mtrl_famo.config.Config` for a run.

Composes the YAML tree with Hydra's compose API, turns Hydra/OmegaConf errors
into one-line :class:`ConfigError` messages, picks the run folder and decides
between a fresh run and a resume.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtrl_famo.config import Config, ConfigError, register_schemas
from mtrl_famo.config_checks import validate
from mtrl_famo.run_files import CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, RESULTS_FILE, population_members
from mtrl_famo.run_records import RunFileError, read_json
from mtrl_famo.saved_config import NOT_RESUMABLE, RESUMABLE_PREFIXES, load_saved_config  # noqa: F401 (re-exported)

GROUPS = ("benchmark", "aggregator", "agent", "protocol", "experiment")
# What may change when a run is resumed; everything else must match the saved run.
MULTIRUN_FLAGS = ("--multirun", "-m")


def config_dir() -> Path:
    """The YAML config tree (``configs/`` in the source tree, packaged as ``mtrl_famo.configs``)."""
    return Path(str(resources.files("mtrl_famo.configs")))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _schema_keys(node) -> list[str]:
    return [k for k in OmegaConf.to_container(node, resolve=False)] if node is not None else []


def _explain(exc: Exception, overrides: Sequence[str]) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the value and what is allowed."""
    text = str(exc)
    cause = exc.__cause__
    missing = re.search(r"Could not find '([\w-]+)/([^']+)'", text)
    if isinstance(exc, MissingConfigException) and missing:
        group, option = missing.groups()
        return f"{group}={option!r} is unknown; allowed: {', '.join(group_options(group))}"
    not_found = re.search(r"Could not override '([^']+)'", text)
    if not_found:
        key = not_found.group(1)
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(parent, overrides)
        return f"unknown config key {key!r}; allowed keys{' under ' + repr(parent) if parent else ''}: {allowed}"
    merging = re.search(r"Error merging override (\S+)", text)
    if merging and cause is not None:
        first = str(cause).splitlines()[0]
        return f"bad value in {merging.group(1)!r}: {first}"
    return text.splitlines()[0] + (f": {str(cause).splitlines()[0]}" if cause else "")


def _allowed_keys(parent: str, overrides: Sequence[str]) -> str:
    try:
        cfg = _compose([o for o in overrides if "=" in o and "." not in o.split("=")[0]])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return ", ".join(_schema_keys(node))
    except Exception:
        return "see `mtrl-famo train --help`"


def _compose(overrides: Sequence[str]):
    register_schemas()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def compose_node(overrides: Sequence[str]):
    """The composed config tree (a DictConfig) of ``overrides``, its interpolations still live
    (a population derives its members from it: the PCGrad seed follows ``${seed}``).
    Call :func:`compose_config` first: it reports bad input."""
    return _compose(overrides)


def validate_run(cfg: Config) -> Config:
    """Every check of a run's config before any work starts; returns ``cfg``.

    The schema's own checks (:func:`~mtrl_famo.config_checks.validate`: ranges, names,
    combinations), then those that need Meta-World (the MT1 task name, the video tasks).

    :raises ConfigError: naming the bad value and what is allowed.
    """
    validate(cfg)
    from mtrl_famo.envs import check_env_name  # imports metaworld: only once the schema's checks pass
    from mtrl_famo.video.tasks import check_video_config

    if cfg.benchmark.name == "mt1":
        check_env_name(cfg.benchmark.env_name)
    if cfg.benchmark.backend == "envpool":
        from mtrl_famo.envpool_envs import import_envpool

        import_envpool()  # installed, else one line naming the install
    check_video_config(cfg)
    return cfg


def compose_config(overrides: Sequence[str], check: bool = True) -> Config:
    """Compose, type-check and validate a config from Hydra-style overrides.

    :param check: run :func:`validate_run`; ``False`` leaves it to the caller (``train_config``
        validates the config a resumed run will have, not the defaults the overrides compose to).

    :raises ConfigError: with one line naming the bad value and what is allowed.
    """
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"argument {o!r} is not a key=value override (see `mtrl-famo train --help`)")
    try:
        cfg = _compose(overrides)
        obj = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_explain(exc, overrides)) from None
    except ValueError as exc:  # OmegaConf's own, e.g. a list index that is not a number: agent.hidden_sizes.x=1
        raise ConfigError(f"bad override among {' '.join(overrides)}: {str(exc).splitlines()[0]}") from None
    check_added_keys(overrides, obj)
    return validate_run(obj) if check else obj


def check_added_keys(overrides: Sequence[str], cfg: Config) -> None:
    """Refuse ``+key=value`` and ``++key=value`` for a key the schema does not have.

    Hydra's ``+`` adds a key and ``++`` adds or sets one, past the schema's check of
    unknown keys, so ``+agent.actor_lrr=0.1`` would be accepted and do nothing. Config
    groups (``+experiment=NAME``, ``hydra/launcher=...``) and ``hydra.*`` are Hydra's to check.

    :raises ConfigError: naming the key and the keys allowed where it was put.
    """
    for o in overrides:
        if not o.startswith("+"):
            continue
        key = override_key(o)
        if "/" in key or key in GROUPS or key.split(".")[0] == "hydra":
            continue
        node, parts = cfg, key.split(".")
        for depth, part in enumerate(parts):
            names = [f.name for f in fields(node)] if is_dataclass(node) else []
            if part not in names:
                parent = ".".join(parts[:depth])
                where = f" under {parent!r}" if parent else ""
                allowed = ", ".join(names) if names else f"none ({parent} is a value, not a group of keys)"
                raise ConfigError(f"unknown config key {key!r} (in {o!r}); allowed keys{where}: {allowed}")
            node = getattr(node, part)


def config_help() -> list[str]:
    """Lines ``key=default  help`` for every config key, the defaults those a plain ``train`` composes.

    Values come from the YAML tree (so ``aggregator.c`` shows MT10's 0.9), help from the schema;
    each aggregator's own options follow, marked with the ``aggregator=NAME`` that has them.
    """
    from mtrl_famo.config import AGGREGATOR_SCHEMAS, AggregatorConfig

    def lines(node, prefix: str = "", skip: tuple = (), note: str = "") -> list[str]:
        out = []
        for f in fields(node):
            value = getattr(node, f.name)
            if f"{prefix}{f.name}" in skip:
                continue
            if is_dataclass(value):
                out += lines(value, f"{prefix}{f.name}.", skip, note)
            else:
                shown = "null" if value is None else value
                doc = f.metadata.get("help") or base_help.get(f"{prefix}{f.name}", "")
                out.append(f"  {prefix}{f.name}={shown}".ljust(40) + f"  {note}{doc}")
        return out

    # The per-aggregator schemas restate `name` without help; the base schema has it.
    base_help = {f"aggregator.{f.name}": f.metadata.get("help", "") for f in fields(AggregatorConfig)}
    default = OmegaConf.to_object(_compose([]))
    out = lines(default)
    base = {f.name for f in fields(AggregatorConfig)} - {"apply_to"}
    extras = []
    for name in AGGREGATOR_SCHEMAS:
        agg = OmegaConf.to_object(_compose([f"aggregator={name}"])).aggregator
        own = [f for f in fields(agg) if f.name not in base
               and not (f.name == "apply_to" and agg.apply_to == default.aggregator.apply_to)]
        extras += [f"  aggregator.{f.name}={getattr(agg, f.name)}".ljust(40) + f"  (aggregator={name}) "
                   f"{f.metadata.get('help', '')}" for f in own]
    last = max(i for i, line in enumerate(out) if line.startswith("  aggregator."))
    return out[:last + 1] + extras + out[last + 1:]


def override_key(override: str) -> str:
    """``train.seed`` for ``train.seed=3``, ``+x=1`` and ``~x``."""
    return override.split("=", 1)[0].lstrip("+~")


def default_run_dir(cfg: Config) -> str:
    return f"runs/{cfg.benchmark.label}-{cfg.aggregator.name}-s{cfg.seed}"


def train_config(overrides: Sequence[str], composed: Config | None = None) -> tuple[Config, bool]:
    """The config of a ``train`` call and whether it resumes an existing run.

    A ``run_dir`` holding a checkpoint is resumed with its saved config; only
    ``train.*``, ``eval.*`` and ``device`` may be changed on the command line then.

    :param overrides: the command line's ``key=value`` overrides.
    :param composed: the config they compose to, when the caller already has it (a sweep
        job gets it from Hydra); composed here otherwise.
    """
    cfg = compose_config(overrides, check=False) if composed is None else composed
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(cfg)
    run_dir = Path(cfg.run_dir)
    check_run_dir(run_dir)
    if (run_dir / CHECKPOINT_FILE).exists():
        if not (run_dir / CONFIG_FILE).exists():
            raise ConfigError(f"run_dir={str(run_dir)!r} has a checkpoint but no {CONFIG_FILE}; cannot resume it")
        saved = load_saved_config(run_dir)
        saved_node, new_node = OmegaConf.structured(saved), OmegaConf.structured(cfg)
        fixed = []
        for o in overrides:
            key = override_key(o)
            if key.split(".")[0] in RESUMABLE_PREFIXES and key not in NOT_RESUMABLE:
                OmegaConf.update(saved_node, key, OmegaConf.select(new_node, key), merge=False)
            else:
                fixed.append(o)
        _refuse_changes(run_dir, fixed, saved_node, new_node)
        resumed = OmegaConf.to_object(saved_node)
        resumed.run_dir = str(run_dir)
        return validate_run(resumed), True
    validate_run(cfg)
    if _holds_foreign_files(run_dir) and not (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"run_dir={str(run_dir)!r} exists and is not a mtrl-famo run; choose an empty or new folder")
    return cfg, False


def _leaves(node, prefix: str) -> dict:
    """``{"benchmark.max_episode_steps": 500, ...}`` under ``prefix`` of a config node."""
    value = OmegaConf.select(node, prefix) if prefix else node
    if not isinstance(value, DictConfig):
        return {prefix: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value}
    out = {}
    for k in value:
        out.update(_leaves(node, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _refuse_changes(run_dir: Path, overrides: Sequence[str], saved_node, new_node) -> None:
    """:raises ConfigError: an override changes a setting the saved run has, naming the most specific
    override that changes it (``benchmark.max_episode_steps=40``, not the ``benchmark=mt1`` beside it)."""
    changes = []
    for o in overrides:
        key = override_key(o)
        old, new = _leaves(saved_node, key), _leaves(new_node, key)
        for leaf in sorted(set(old) | set(new)):
            if old.get(leaf) != new.get(leaf):
                changes.append((len(key), leaf.endswith(".name"), leaf, o))
    if not changes:
        return
    _, _, leaf, o = max(changes, key=lambda c: c[:2])
    sets = "" if override_key(o) == leaf else f" (which sets {leaf}={_show(OmegaConf.select(new_node, leaf))})"
    raise ConfigError(
        f"run_dir={str(run_dir)!r} holds a run with {leaf}={_show(OmegaConf.select(saved_node, leaf))}; cannot "
        f"resume it with {o!r}{sets} (only train.* but train.buffer_size, eval.*, video.* and device may change; "
        f"pick another run_dir for a new run)")


def _show(value) -> str:
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return "null" if value is None else str(value)


def check_run_dir(run_dir: Path, key: str = "run_dir") -> None:
    """:raises ConfigError: ``run_dir`` (the value of ``key``) is a file, or lies under one, or cannot be written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{key}={str(run_dir)!r} is a file; choose a folder")
    existing = next(p for p in [run_dir, *run_dir.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}={str(run_dir)!r} lies under {str(existing)!r}, which is a file; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={str(run_dir)!r} cannot be written: no write permission in {str(existing)!r}")


def check_machine(cfg: Config) -> None:
    """What only the machine that runs the command can check: the device and the CPU cores.

    Not part of :func:`validate_run`: a sweep is validated where it is submitted, which
    need not be where its jobs run (a SLURM login node has no GPU).

    :raises ConfigError: CUDA asked for but not available, or more torch threads than cores.
    """
    import torch

    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={cfg.device!r} but CUDA is not available here; use device=cpu or device=auto")
        index = cfg.device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"device={cfg.device!r}; allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    check_aggregator(cfg)
    from mtrl_famo.memory import check_memory

    check_memory(cfg)
    cores = os.cpu_count() or 1
    if cfg.train.torch_threads > cores:
        raise ConfigError(f"train.torch_threads={cfg.train.torch_threads} is more than the {cores} CPU cores here; "
                          f"allowed: 0 (automatic) to {cores}")


def check_aggregator(cfg: Config) -> None:
    """Build the run's aggregator once: its own option checks, and the optional packages it needs
    (nashmtl: CVXPY), before any environment is built.

    :raises ConfigError: one line, naming the bad value or the ``pip install`` that is missing.
    """
    from mtrl_famo.aggregators import make_aggregator
    from mtrl_famo.config import TASKS_PER_BENCHMARK, aggregator_options

    try:
        make_aggregator(cfg.aggregator.name, num_tasks=TASKS_PER_BENCHMARK[cfg.benchmark.name],
                        **aggregator_options(cfg.aggregator))
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None


def _holds_foreign_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` has files other than what Hydra writes into a sweep job's folder (and our lock)."""
    if not run_dir.exists():
        return False
    return any(p.name not in (".hydra", LOCK_FILE) and p.suffix != ".log" for p in run_dir.iterdir())


def finished_results(cfg: Config) -> dict | None:
    """The run's ``results.json`` if it finished with at least the configured steps, else None."""
    path = Path(cfg.run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = read_json(path)
    except RunFileError as exc:
        raise ConfigError(f"{exc}; delete it and run again: the run resumes from its checkpoint and writes it "
                          f"anew") from None
    total = cfg.train.total_for(len(results.get("tasks", []))) or None
    if results.get("finished") and total is not None and results.get("step", 0) >= total:
        return results
    return None


def load_checkpointed_config(run_dir: Path) -> Config:
    """The saved config of a run folder that holds a checkpoint (for ``eval`` and ``video``).

    :raises ConfigError: if ``run_dir`` has no checkpoint or no ``config.yaml``.
    """
    if not (run_dir / CHECKPOINT_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        members = population_members(run_dir)
        hint = (f"; it is a population's folder: give one member, e.g. run_dir={str(run_dir / members[0])!r} "
                f"(members: {', '.join(members)})") if members else ""
        raise ConfigError(f"run_dir={str(run_dir)!r} holds no checkpoint ({CHECKPOINT_FILE}) of a mtrl-famo run{hint}")
    return load_saved_config(run_dir)


def eval_config(overrides: Sequence[str]) -> Config:
    """The saved config of ``run_dir`` with ``eval.*``/``device`` overrides; ``eval.episodes`` defaults to 50."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    bad = [o for o in overrides if "=" not in o or override_key(o).split(".")[0] not in ("eval", "device", "run_dir")]
    if bad:
        raise ConfigError(f"mtrl-famo eval takes run_dir=, eval.* and device= overrides; got {bad[0]!r}")
    if "run_dir" not in values:
        raise ConfigError("mtrl-famo eval needs run_dir=DIR (a folder written by mtrl-famo train)")
    saved = load_checkpointed_config(Path(values["run_dir"]))
    node = OmegaConf.structured(saved)
    if "eval.episodes" not in values:
        values["eval.episodes"] = str(saved.eval.final_episodes)
    for key, value in values.items():  # one at a time, so an error names its key
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([f"{key}={value}"]))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"bad value in '{key}={value}': {str(exc).splitlines()[0]}") from None
    cfg = OmegaConf.to_object(node)
    return validate_run(cfg)
