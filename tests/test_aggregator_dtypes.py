"""Every registered aggregator takes float32 and float64 inputs (issue 26): used outside RL, float64
losses and gradients are common. The result has the input's dtype, and the two precisions agree."""

from __future__ import annotations

import pytest
import torch

from mtrl_famo.aggregators import AGGREGATORS, make_aggregator

K, P = 3, 7


def _build(name: str):
    if name == "nashmtl":
        pytest.importorskip("cvxpy")
    return make_aggregator(name, num_tasks=K)


def _three_steps(name: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Three updates of a fresh aggregator on fixed inputs of ``dtype``: what each one returns
    (the ``[P]`` direction of a gradient aggregator; the loss weights' gradient ``[K]`` otherwise)."""
    agg = _build(name)
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(3):
        if agg.uses_task_gradients:
            G = torch.randn(K, P, generator=gen).to(dtype)
            direction = agg.combine(G)
            assert direction.dtype == dtype and direction.shape == (P,)
            out.append(direction)
        else:
            x = (torch.rand(K, generator=gen) + 0.5).to(dtype).requires_grad_()
            combined = agg.combine_losses(x ** 2)
            assert combined.dtype == dtype and combined.shape == ()
            combined.backward()
            assert x.grad.dtype == dtype
            if agg.needs_update:  # FAMO: the same batch's losses after the step, each fallen its own way
                agg.update((x.detach() * torch.tensor([0.9, 0.5, 0.99], dtype=dtype)) ** 2)
            out.append(x.grad.clone())
    return out


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_takes_float32_and_float64_and_both_agree(name):
    single, double = _three_steps(name, torch.float32), _three_steps(name, torch.float64)
    for a, b in zip(single, double):
        assert torch.isfinite(b).all()
        # Nash-MTL's convex solver stops at a residual of 1e-3; the others are exact up to float32 rounding.
        torch.testing.assert_close(a.double(), b, rtol=5e-3 if name == "nashmtl" else 1e-4,
                                   atol=5e-3 if name == "nashmtl" else 1e-5)


def test_mean_takes_both_dtypes_in_its_loss_form_too():
    agg = make_aggregator("mean", num_tasks=K)
    for dtype in (torch.float32, torch.float64):
        losses = torch.arange(1.0, K + 1).to(dtype)
        assert agg.combine_losses(losses).dtype == dtype
