"""Adam as the fused kernel, also when resuming from a checkpoint saved with the default Adam."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

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


class AdamTensors(NamedTuple):
    """A ``torch.optim.Adam``'s parameters and state as tensor lists, for :func:`adam_step_`.

    The lists hold the optimizer's own tensors (not copies), so a step taken through
    them is the optimizer's step: its ``state_dict`` and checkpoints are unchanged.
    """

    params: list[torch.Tensor]
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    steps: list[torch.Tensor]  # 0-dim float32 on each parameter's device, as fused Adam keeps them
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float


def adam_tensors(optimizer: torch.optim.Adam) -> AdamTensors:
    """The tensors of a one-group fused Adam, creating its state as its first ``step`` would.

    Adam creates its state lazily at the first step; a step taken by :func:`adam_step_`
    inside a compiled graph needs it to exist beforehand.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"expected an Adam with one parameter group, got {len(optimizer.param_groups)}")
    group = optimizer.param_groups[0]
    if group["amsgrad"] or group["maximize"] or group.get("decoupled_weight_decay", False):
        raise ValueError("adam_tensors supports plain Adam (no amsgrad, maximize or decoupled weight decay)")
    params = list(group["params"])
    for p in params:
        state = optimizer.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    states = [optimizer.state[p] for p in params]
    beta1, beta2 = group["betas"]
    return AdamTensors(params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                       [s["step"] for s in states], float(group["lr"]), float(beta1), float(beta2),
                       float(group["eps"]), float(group["weight_decay"]))


@torch.no_grad()
def adam_step_(adam: AdamTensors, grads: list[torch.Tensor]) -> None:
    """One Adam step along ``grads`` (one per parameter, same shapes), in place.

    Run eagerly it is the fused kernel, the step ``optimizer.step()`` would take.
    Traced by ``torch.compile`` (``train.compile=graph``) or under ``torch.func.vmap`` (a
    population's members) it is the same algorithm in plain per-tensor ops, which the
    compiler fuses into its graph and vmap batches (neither can take the fused kernel, and
    vmap has no rule for the for-each ops); the two agree to float rounding. The step
    counters stay tensors, so a compiled step does not recompile as they grow.
    """
    if not torch.compiler.is_compiling() and not torch._C._functorch.is_batchedtensor(adam.params[0]):
        torch._foreach_add_(adam.steps, 1.0)  # as Adam.step does: the fused kernel reads, not bumps, the counts
        torch._fused_adam_(adam.params, grads, adam.exp_avg, adam.exp_avg_sq, [], adam.steps, lr=adam.lr,
                           beta1=adam.beta1, beta2=adam.beta2, weight_decay=adam.weight_decay, eps=adam.eps,
                           amsgrad=False, maximize=False)
        return
    for param, grad, exp_avg, exp_avg_sq, step in zip(adam.params, grads, adam.exp_avg, adam.exp_avg_sq,
                                                      adam.steps):
        # The fused CPU kernel's arithmetic, in its order (its scalars in float64), so that a
        # population's members round as their single runs do.
        step.add_(1.0)
        if adam.weight_decay:
            grad = grad + adam.weight_decay * param
        exp_avg.add_(grad - exp_avg, alpha=1.0 - adam.beta1)
        exp_avg_sq.copy_(torch.addcmul(exp_avg_sq * adam.beta2, grad, grad, value=1.0 - adam.beta2))
        step64 = step.to(torch.float64)
        step_size = (adam.lr / (1.0 - torch.pow(adam.beta1, step64))).to(param.dtype)
        bias_correction2_sqrt = (1.0 - torch.pow(adam.beta2, step64)).sqrt().to(param.dtype)
        denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + adam.eps
        param.sub_(step_size * exp_avg / denom)
