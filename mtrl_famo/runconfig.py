"""From command-line overrides to a validated :class:`~mtrl_famo.config.Config` for a run.

Composes the YAML tree with Hydra's compose API, turns Hydra/OmegaConf errors
into one-line :class:`ConfigError` messages, picks the run folder and decides
between a fresh run and a resume.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtrl_famo.config import Config, ConfigError, register_schemas, validate
from mtrl_famo.run_files import CHECKPOINT_FILE, CONFIG_FILE, RESULTS_FILE

GROUPS = ("benchmark", "aggregator", "agent")
# What may change when a run is resumed; everything else must match the saved run.
RESUMABLE_PREFIXES = ("train", "eval", "video", "device", "run_dir")
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


def compose_config(overrides: Sequence[str]) -> Config:
    """Compose, type-check and validate a config from Hydra-style overrides.

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
    return validate(obj)


def override_key(override: str) -> str:
    """``train.seed`` for ``train.seed=3``, ``+x=1`` and ``~x``."""
    return override.split("=", 1)[0].lstrip("+~")


def default_run_dir(cfg: Config) -> str:
    return f"runs/{cfg.benchmark.label}-{cfg.aggregator.name}-s{cfg.seed}"


def load_saved_config(run_dir: Path) -> Config:
    """The config a run was started with (its ``config.yaml``), type-checked again."""
    from mtrl_famo.config import AGGREGATOR_SCHEMAS

    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    aggregator = saved.pop("aggregator")
    name = aggregator.get("name")
    if name not in AGGREGATOR_SCHEMAS:
        raise ConfigError(f"{run_dir / CONFIG_FILE}: aggregator {name!r} is unknown; "
                          f"allowed: {', '.join(sorted(AGGREGATOR_SCHEMAS))}")
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), saved))
        cfg.aggregator = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AGGREGATOR_SCHEMAS[name]),
                                                             aggregator))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{run_dir / CONFIG_FILE} is not a valid run config: {str(exc).splitlines()[0]}") from None
    return cfg


def train_config(overrides: Sequence[str], composed: Config | None = None) -> tuple[Config, bool]:
    """The config of a ``train`` call and whether it resumes an existing run.

    A ``run_dir`` holding a checkpoint is resumed with its saved config; only
    ``train.*``, ``eval.*`` and ``device`` may be changed on the command line then.

    :param overrides: the command line's ``key=value`` overrides.
    :param composed: the config they compose to, when the caller already has it (a sweep
        job gets it from Hydra); composed here otherwise.
    """
    cfg = compose_config(overrides) if composed is None else validate(composed)
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(cfg)
    run_dir = Path(cfg.run_dir)
    if (run_dir / CHECKPOINT_FILE).exists():
        if not (run_dir / CONFIG_FILE).exists():
            raise ConfigError(f"run_dir={str(run_dir)!r} has a checkpoint but no {CONFIG_FILE}; cannot resume it")
        saved = load_saved_config(run_dir)
        saved_node, new_node = OmegaConf.structured(saved), OmegaConf.structured(cfg)
        for o in overrides:
            key = override_key(o)
            if key.split(".")[0] in RESUMABLE_PREFIXES:
                OmegaConf.update(saved_node, key, OmegaConf.select(new_node, key), merge=False)
            elif OmegaConf.select(saved_node, key) != OmegaConf.select(new_node, key):
                raise ConfigError(
                    f"run_dir={str(run_dir)!r} holds a run with {key}={OmegaConf.select(saved_node, key)}; "
                    f"cannot resume it with {o!r} (only train.*, eval.*, video.* and device may change; "
                    f"pick another run_dir for a new run)"
                )
        resumed = OmegaConf.to_object(saved_node)
        resumed.run_dir = str(run_dir)
        return validate(resumed), True
    if _holds_foreign_files(run_dir) and not (run_dir / CONFIG_FILE).exists():
        raise ConfigError(f"run_dir={str(run_dir)!r} exists and is not a mtrl-famo run; choose an empty or new folder")
    return cfg, False


def _holds_foreign_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` has files other than what Hydra writes into a sweep job's folder."""
    if not run_dir.exists():
        return False
    return any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir())


def finished_results(cfg: Config) -> dict | None:
    """The run's ``results.json`` if it finished with at least the configured steps, else None."""
    path = Path(cfg.run_dir) / RESULTS_FILE
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    total = cfg.train.total_for(len(results.get("tasks", []))) or None
    if results.get("finished") and total is not None and results.get("step", 0) >= total:
        return results
    return None


def load_checkpointed_config(run_dir: Path) -> Config:
    """The saved config of a run folder that holds a checkpoint (for ``eval`` and ``video``).

    :raises ConfigError: if ``run_dir`` has no checkpoint or no ``config.yaml``.
    """
    if not (run_dir / CHECKPOINT_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"run_dir={str(run_dir)!r} holds no checkpoint ({CHECKPOINT_FILE}) of a mtrl-famo run")
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
    try:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist([f"{k}={v}" for k, v in values.items()]))
    except OmegaConfBaseException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    cfg = OmegaConf.to_object(node)
    return validate(cfg)
