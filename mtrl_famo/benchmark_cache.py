"""Meta-World's benchmark objects (the goals of MT1/MT10/MT50), drawn once per machine and then read from disk.

``metaworld.MT10(seed=s)`` draws every task's 50 goals by resetting that task's env again and again, and a
run builds it twice (its training and its evaluation envs). Measured on one core: MT10's envs take 7.6 s to
build afresh and 1.5 s from the cache, MT50's 37.7 s and 6.4 s. What it draws depends only on the benchmark,
the seed, the goals per task (Meta-World's ``_N_GOALS``) and the versions of Meta-World, MuJoCo and NumPy, so
its attributes are pickled into a cache folder under a name made of all of them, and later builds read them
back in milliseconds. Meta-World's own ``make_mt_envs`` builds the envs from it exactly as from a fresh one
(``tests/test_benchmark_cache.py`` compares the two).

Folder: ``$MTRL_FAMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtrl-famo``, else ``~/.cache/mtrl-famo``;
``MTRL_FAMO_CACHE_DIR=off`` draws afresh every time. An unreadable or foreign cache file is drawn again and
replaced; a cache folder that cannot be written is skipped (the draw still happens, nothing fails).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from importlib import metadata
from pathlib import Path
from typing import Iterator

import metaworld

from mtrl_famo.atomic import atomic_write

CACHE_ENV = "MTRL_FAMO_CACHE_DIR"
BENCHMARKS = ("MT1", "MT10", "MT50")  # the classes make_mt_envs looks up in metaworld's module namespace


def cache_dir() -> Path | None:
    """The folder of the cached benchmarks, or None when ``MTRL_FAMO_CACHE_DIR=off``."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtrl-famo"


def cache_file(name: str, args: tuple, seed: int) -> Path | None:
    """The file of benchmark ``name`` (``MT10``; ``MT1`` with ``args=(env_name,)``) with this seed."""
    folder = cache_dir()
    if folder is None:
        return None
    versions = "-".join(f"{lib}{metadata.version(lib)}" for lib in ("metaworld", "mujoco", "numpy"))
    what = "-".join([name, *map(str, args)])
    return folder / "metaworld-benchmarks" / f"{what}-seed{seed}-goals{metaworld._N_GOALS}-{versions}.pkl"


def cached_benchmark(benchmark_cls: type, *args, seed: int | None = None):
    """``benchmark_cls(*args, seed=seed)``, read from the cache when drawn before (a None seed is never cached)."""
    path = None if seed is None else cache_file(benchmark_cls.__name__, args, seed)
    if path is not None and path.is_file():
        try:
            with path.open("rb") as f:
                saved = pickle.load(f)
            if saved["benchmark"] == benchmark_cls.__name__ and saved["attributes"]["_train_tasks"]:
                bench = benchmark_cls.__new__(benchmark_cls)
                bench.__dict__.update(saved["attributes"])
                return bench
        except Exception:  # noqa: BLE001 - a torn or foreign file is drawn again below
            pass
    bench = benchmark_cls(*args, seed=seed)
    if path is not None:
        # Its attributes, not the object: within cached_benchmarks() the class's name points elsewhere.
        saved = {"benchmark": benchmark_cls.__name__, "attributes": vars(bench)}
        with contextlib.suppress(OSError):  # a read-only home: no cache, same benchmark
            atomic_write(path, lambda f: pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL))
    return bench


@contextlib.contextmanager
def cached_benchmarks() -> Iterator[None]:
    """Within the block, Meta-World's ``make_mt_envs`` (and ``gym.make_vec("Meta-World/MT10")``) draws its
    benchmark through :func:`cached_benchmark`.

    ``make_mt_envs`` builds ``globals()[name](seed=seed)``, i.e. the class named ``MT10`` in ``metaworld``'s
    namespace, and has no argument for a prebuilt benchmark; so those names are pointed at the cache for the
    block and restored after it.
    """
    originals = {name: getattr(metaworld, name) for name in BENCHMARKS}
    try:
        for name, cls in originals.items():
            setattr(metaworld, name, _Cached(cls))
        yield
    finally:
        for name, cls in originals.items():
            setattr(metaworld, name, cls)


class _Cached:
    """Stands for a benchmark class: calling it returns :func:`cached_benchmark` of the class."""

    def __init__(self, cls: type):
        self.cls = cls

    def __call__(self, *args, seed: int | None = None):
        return cached_benchmark(self.cls, *args, seed=seed)
