"""Adam as the fused kernel, also when resuming from a checkpoint saved with the default Adam."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def fused_adam(params: Iterable[torch.Tensor], **options) -> torch.optim.Adam:
    """``torch.optim.Adam(params, fused=True, **options)``: one kernel per step for all parameters."""
    return torch.optim.Adam(params, fused=True, **options)


def load_fused_adam_state(optimizer: torch.optim.Adam, state: dict) -> None:
    """Load ``state`` into a fused Adam, keeping it fused.

    ``Optimizer.load_state_dict`` takes the saved param groups' settings, so a state saved
    by the default (for-each) Adam would switch the optimizer back to it; its step
    counters also stay on the CPU, where the fused kernel wants them on the parameters' device.
    """
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"] = True
        group["foreach"] = None
        for p in group["params"]:
            p_state = optimizer.state.get(p, {})
            if "step" in p_state:
                p_state["step"] = p_state["step"].to(p.device, torch.float32)
