"""A run folder with a ``config.yaml`` but no checkpoint: a run killed before its first checkpoint."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from mtrl_famo.config import Config, ConfigError
from mtrl_famo.run_files import CHECKPOINT_FILE, CONFIG_FILE
from mtrl_famo.saved_config import NOT_RESUMABLE, RESUMABLE_PREFIXES, flat_keys, load_saved_config


def unstarted_run(cfg: Config) -> bool:
    """Whether ``cfg.run_dir`` holds a run stopped before its first checkpoint (a ``config.yaml``, no
    checkpoint) with the config of ``cfg``: then it starts again from step 0.

    The keys a resume may change (``train.*`` but the buffer size, ``eval.*``, ``video.*``, ``device``)
    may differ here too.

    :raises ConfigError: the folder's config.yaml is of another run (naming the first key that differs).
    """
    run_dir = Path(cfg.run_dir)
    if (run_dir / CHECKPOINT_FILE).exists() or not (run_dir / CONFIG_FILE).is_file():
        return False
    saved = flat_keys(OmegaConf.to_container(OmegaConf.structured(load_saved_config(run_dir))))
    new = flat_keys(OmegaConf.to_container(OmegaConf.structured(cfg)))
    for key in sorted(saved.keys() | new.keys()):
        if (key.split(".")[0] in RESUMABLE_PREFIXES and key not in NOT_RESUMABLE) \
                or saved.get(key) == new.get(key):
            continue
        raise ConfigError(f"run_dir={str(run_dir)!r} holds a run stopped before its first checkpoint, with "
                          f"{key}={saved.get(key)}; cannot start it again with {key}={new.get(key)} (remove the "
                          f"folder, or choose another run_dir for a new run)")
    return True
