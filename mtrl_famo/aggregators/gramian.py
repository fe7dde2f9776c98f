"""Shared machinery of the gradient aggregators that weight the rows of ``G`` from its Gram matrix.

Most gradient aggregators of the multi-task literature return ``w @ G`` for task weights
``w`` ``[num_tasks]`` that depend on ``G`` only through its Gram matrix ``G G^T``
``[num_tasks, num_tasks]`` (TorchJD calls them Gramian weightings, see
``torchjd/aggregation/_weighting_bases.py``). :class:`GramianWeighted` is that shape: the
Gram matrix is computed once on ``G``'s device (:func:`~mtrl_famo.aggregators.base.gram_matrix`),
a subclass turns it into weights (:meth:`GramianWeighted.weights_from_gram`), and the
direction is ``w @ G``. The weights stay readable as ``task_weights``, so the agent logs them.

Where the weights need a solver that runs on the host (TorchJD's quadprog, SciPy and
CVXPY based weightings), :func:`host_weights` reads the ``[k, k]`` Gram matrix back once,
runs the solver on the CPU copy, and sends the ``[k]`` weights to ``G``'s device: one
device-to-host read per call, as the host PCGrad/CAGrad of ``reference.py`` did.

TorchJD is imported lazily (its import pulls in CVXPY and qpsolvers, about a second and a
half): only the aggregators that use it pay for it, when they are built.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch
from torch import Tensor

from .base import Aggregator, LastWeights, gram_matrix


class MissingExtraError(ValueError):
    """An aggregator needs an optional package that is not installed (``runconfig.check_machine``
    turns it into one line with exit code 2, before any environment is built)."""


def require_modules(aggregator: str, modules: tuple[str, ...], install: str) -> None:
    """Raise :class:`MissingExtraError` naming the install when one of ``modules`` cannot be imported.

    :param aggregator: the aggregator's name, for the message.
    :param modules: the importable module names it needs.
    :param install: what to ``pip install`` to get them, e.g. ``mtrl-famo[nashmtl]``.
    """
    missing = []
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtraError(f"aggregator={aggregator} needs {', '.join(missing)}, which "
                                f"{'is' if len(missing) == 1 else 'are'} not installed; "
                                f"install {'it' if len(missing) == 1 else 'them'} with: pip install \"{install}\"")


def host_weights(solve: Callable[[Tensor], Tensor], gram: Tensor) -> Tensor:
    """``solve`` (a TorchJD weighting, or any ``[k, k] -> [k]`` function) on a CPU copy of ``gram``.

    One read of the ``[k, k]`` matrix from the device. A non-finite Gram matrix (NaN or inf
    in ``G`` with ``immediate_checks`` off) gives NaN weights instead of a solver error deep
    inside a library, so that the training loop's own watch reports the bad step.

    :param gram: ``[num_tasks, num_tasks]`` float64 on any device.
    :returns: ``[num_tasks]`` float64 on ``gram``'s device.
    """
    host = gram.detach().to("cpu", torch.float64)  # the one device-to-host read
    if not bool(torch.isfinite(host).all()):
        w = torch.full((host.shape[0],), float("nan"), dtype=torch.float64)
    else:
        with torch.no_grad():
            w = solve(host).to(torch.float64)
    return w.to(gram.device)


class GramianWeighted(LastWeights, Aggregator):
    """Base class: direction ``w @ G`` with ``w`` ``[num_tasks]`` from the Gram matrix.

    Subclasses implement :meth:`weights_from_gram`; those with more state than the last
    weights extend ``state_dict``/``load_state_dict``.

    :param num_tasks: number of tasks ``k``.
    """

    uses_task_gradients = True

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self._weights: Tensor | None = None

    def weights_from_gram(self, gram: Tensor) -> Tensor:
        """:param gram: ``[num_tasks, num_tasks]`` float64 ``G G^T``. :returns: ``[num_tasks]`` float64."""
        raise NotImplementedError

    def combine(self, G: Tensor) -> Tensor:
        """:param G: ``[num_tasks, num_params]``. :returns: ``[num_params]`` direction ``w @ G``."""
        direction, self._weights = self.combine_fn({}, G)
        return direction

    def combine_fn(self, state: dict, G: Tensor, *draws: Tensor) -> tuple[Tensor, Tensor]:
        """``(w @ G, w)`` for ``G`` ``[num_tasks, num_params]``, nothing kept."""
        G = self._check_matrix(G, check_values=False)
        gram = gram_matrix(G, check=self.immediate_checks)  # [k, k] float64, on G's device
        w = self.weights_from_gram(gram)
        return w.to(G.dtype) @ G, w

    def state_dict(self) -> dict[str, Any]:
        """``{"weights": the last weights [num_tasks] or None}`` (diagnostic only: the next
        ``combine`` does not depend on them)."""
        return {"weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_state_keys(state, {"weights"})
        self._weights = self._load_weights(state["weights"])

    def _load_weights(self, w: Tensor | None) -> Tensor | None:
        if w is not None and tuple(w.shape) != (self.num_tasks,):
            raise ValueError(f"expected weights of shape [num_tasks={self.num_tasks}], got {tuple(w.shape)}")
        return None if w is None else w.detach().to(torch.float64).clone()


def check_int(name: str, value: int, *, min_value: int) -> int:
    """Return ``value`` as an int, or raise ValueError naming it unless it is an integer ``>= min_value``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {min_value}, got {value!r}")
    if not isinstance(value, int):
        try:
            value = int(value.__index__())  # numpy integers and the like
        except (AttributeError, TypeError):
            raise ValueError(f"{name} must be an integer >= {min_value}, got {value!r}") from None
    if value < min_value:
        raise ValueError(f"{name} must be an integer >= {min_value}, got {value!r}")
    return value


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value``, or raise ValueError naming it and the allowed values."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value
