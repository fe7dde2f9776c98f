"""A run folder's saved config (``config.yaml``) and the rules of what a resume may change.

Below :mod:`~mtrl_famo.runconfig` (which composes new configs), so that the training loop's
own checks (:mod:`~mtrl_famo.restart`) can read a saved config too.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtrl_famo.config import Config, ConfigError
from mtrl_famo.run_files import CONFIG_FILE

# What may change when a run is resumed; everything else must match the saved run.
RESUMABLE_PREFIXES = ("train", "eval", "video", "device", "run_dir")
# ...except these: the replay buffer in the checkpoint has its capacity.
NOT_RESUMABLE = ("train.buffer_size",)


def load_saved_config(run_dir: Path) -> Config:
    """The config a run was started with (its ``config.yaml``), type-checked again."""
    from mtrl_famo.config import AGGREGATOR_SCHEMAS

    path = run_dir / CONFIG_FILE
    try:
        saved = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{at} ({problem}): the run's config is "
                          f"damaged; restore it (the same config is in the checkpoint and in tb/ as "
                          f"'hyperparameters')") from None
    if not isinstance(saved, DictConfig) or not isinstance(saved.get("aggregator"), DictConfig):
        raise ConfigError(f"{path} is not a mtrl-famo run config (no 'aggregator' section): the run's config "
                          f"is damaged")
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


def flat_keys(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: a nested config as dotted keys."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
