"""Multi-task aggregators: turn per-task losses or gradients into one update.

    from mtrl_famo.aggregators import make_aggregator
    agg = make_aggregator("cagrad", num_tasks=10, c=0.9)
    if agg.uses_task_gradients:
        direction = agg.combine(G)            # G: [num_tasks, num_params] -> [num_params]
    else:
        agg.combine_losses(losses).backward()  # losses: [num_tasks]
        optimizer.step()
        agg.update(new_losses)                 # where agg.needs_update (FAMO); a no-op for the others

See ``per_task_grads`` for building ``G`` with one batched backward.
"""

from __future__ import annotations

import inspect
from typing import Any

from .alignedmtl import AlignedMTL
from .base import Aggregator
from .cagrad import CAGrad
from .dwa import DWA
from .dualproj import DualProj
from .fairgrad import FairGrad
from .famo import FAMO
from .gramian import MissingExtraError
from .imtlg import IMTLG
from .mean import Mean
from .mgda import MGDA
from .nashmtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .upgrad import UPGrad
from .uw import UW
from .per_task_grads import (
    assign_flat_grad,
    flatten_grads,
    gradient_diagnostics,
    per_task_gradients,
    per_task_gradients_loop,
)

#: name -> aggregator class; ``make_aggregator`` looks names up here.
AGGREGATORS: dict[str, type[Aggregator]] = {
    "cagrad": CAGrad,
    "dwa": DWA,
    "famo": FAMO,
    "mean": Mean,
    "pcgrad": PCGrad,
    "rlw": RLW,
    "uw": UW,
    # the gradient family of issue 12 (one file each; gramian.py holds what they share)
    "alignedmtl": AlignedMTL,
    "dualproj": DualProj,
    "fairgrad": FairGrad,
    "imtlg": IMTLG,
    "mgda": MGDA,
    "nashmtl": NashMTL,
    "upgrad": UPGrad,
}


def aggregator_options(name: str) -> tuple[str, ...]:
    """The option names that ``make_aggregator(name, ...)`` accepts (besides ``num_tasks``)."""
    cls = _lookup(name)
    params = list(inspect.signature(cls.__init__).parameters)
    return tuple(p for p in params if p not in ("self", "num_tasks"))


def make_aggregator(name: str, num_tasks: int, **options: Any) -> Aggregator:
    """Build the aggregator called ``name`` for ``num_tasks`` tasks.

    :param name: one of ``AGGREGATORS`` (case-insensitive).
    :param num_tasks: number of tasks ``k >= 1``.
    :param options: the aggregator's options, e.g. ``c`` for cagrad, ``w_lr``,
        ``gamma``, ``min_losses``, ``eps`` for famo, ``seed`` for pcgrad and rlw,
        ``lr`` for uw, ``temperature``, ``window`` for dwa.
    :raises ValueError: unknown name, unknown option or bad value; the message
        names the bad value and what is allowed. :class:`MissingExtraError` (a
        ValueError) where the aggregator needs an optional package that is not installed
        (nashmtl: ``pip install "mtrl-famo[nashmtl]"``).
    """
    cls = _lookup(name)
    allowed = aggregator_options(name)
    for option in options:
        if option not in allowed:
            raise ValueError(
                f"unknown option {option!r} for aggregator {name.lower()!r}; "
                f"allowed: {', '.join(allowed) if allowed else '(none)'}"
            )
    return cls(num_tasks, **options)


def _lookup(name: str) -> type[Aggregator]:
    if not isinstance(name, str) or name.lower() not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; allowed: {', '.join(sorted(AGGREGATORS))}")
    return AGGREGATORS[name.lower()]


__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "DWA",
    "DualProj",
    "FAMO",
    "FairGrad",
    "IMTLG",
    "MGDA",
    "Mean",
    "MissingExtraError",
    "NashMTL",
    "PCGrad",
    "RLW",
    "UW",
    "UPGrad",
    "aggregator_options",
    "assign_flat_grad",
    "flatten_grads",
    "gradient_diagnostics",
    "make_aggregator",
    "per_task_gradients",
    "per_task_gradients_loop",
]
