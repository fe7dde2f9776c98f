"""Tests of the aggregators: defining properties through shared asserts, pinned values, errors."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from itertools import product

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

from mtrl_famo.aggregators import AGGREGATORS, Aggregator, aggregator_options, make_aggregator

# ---------------------------------------------------------------------------
# shared asserts (in the style of TorchJD's tests/unit/aggregation/_asserts.py)
# ---------------------------------------------------------------------------


def assert_expected_structure(agg: Aggregator, G: torch.Tensor) -> torch.Tensor:
    """The output is a finite ``[num_params]`` tensor of G's dtype and device."""
    out = agg.combine(G)
    assert out.shape == (G.shape[1],)
    assert out.dtype == G.dtype and out.device == G.device
    assert torch.isfinite(out).all()
    return out


def assert_permutation_invariant(make: Callable[[], Aggregator], G: torch.Tensor, n_perms: int = 3) -> None:
    """Reordering the tasks does not change the output."""
    expected = make().combine(G)
    atol = 1e-6 * float(expected.abs().max()) + 1e-12
    gen = torch.Generator().manual_seed(1)
    for _ in range(n_perms):
        perm = torch.randperm(G.shape[0], generator=gen)
        torch.testing.assert_close(make().combine(G[perm]), expected, rtol=1e-6, atol=atol)


def assert_positively_homogeneous(make: Callable[[], Aggregator], G: torch.Tensor) -> None:
    """Scaling all gradients by a > 0 scales the output by a (up to solver tolerance)."""
    expected = make().combine(G)
    for a in (1e-3, 0.5, 7.0):
        atol = 1e-6 * a * float(expected.abs().max()) + 1e-12
        torch.testing.assert_close(make().combine(a * G), a * expected, rtol=1e-6, atol=atol)


def assert_linear(agg: Aggregator, G1: torch.Tensor, G2: torch.Tensor) -> None:
    """combine(a G1 + b G2) = a combine(G1) + b combine(G2)."""
    torch.testing.assert_close(agg.combine(2.0 * G1 - 3.0 * G2), 2.0 * agg.combine(G1) - 3.0 * agg.combine(G2))


def assert_non_conflicting(agg: Aggregator, G: torch.Tensor) -> None:
    """The output does not increase any task's loss to first order: g_i . out >= 0."""
    out = agg.combine(G)
    assert (G @ out >= -1e-10).all()


def _matrices() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "k1": randn(1, 7),
        "k2_conflict": torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64),
        "k3": randn(3, 20),
        "k5": randn(5, 50),
        "k10_scaled": randn(10, 100) * torch.logspace(-2, 2, 10, dtype=torch.float64)[:, None],
        "k4_zero_row": torch.cat([randn(3, 12), torch.zeros(1, 12, dtype=torch.float64)]),
        "k4_duplicate_rows": randn(3, 15)[[0, 1, 2, 1]],
        "k6_low_rank": randn(6, 2) @ randn(2, 30),
        "k3_zeros": torch.zeros(3, 10, dtype=torch.float64),
        "k4_aligned": randn(1, 40) + 0.1 * randn(4, 40),
        "k3_cancelling_mean": torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.0, 0.0]], dtype=torch.float64),
    }


MATRICES = _matrices()
GRADIENT_AGGREGATORS = [("mean", {}), ("pcgrad", {}), ("pcgrad", {"seed": 3})] + [
    ("cagrad", {"c": c}) for c in (0.0, 0.5, 0.9, 2.0)
]


def _make(name: str, options: dict, k: int) -> Callable[[], Aggregator]:
    return lambda: make_aggregator(name, num_tasks=k, **options)


@pytest.mark.parametrize("name,options", GRADIENT_AGGREGATORS)
@pytest.mark.parametrize("matrix", list(MATRICES))
def test_expected_structure(name: str, options: dict, matrix: str) -> None:
    G = MATRICES[matrix]
    assert_expected_structure(make_aggregator(name, G.shape[0], **options), G)
    assert_expected_structure(make_aggregator(name, G.shape[0], **options), G.float())


@pytest.mark.parametrize("name,options", GRADIENT_AGGREGATORS)
@pytest.mark.parametrize("matrix", list(MATRICES))
def test_positively_homogeneous(name: str, options: dict, matrix: str) -> None:
    G = MATRICES[matrix]
    assert_positively_homogeneous(_make(name, options, G.shape[0]), G)


@pytest.mark.parametrize("name,options", [g for g in GRADIENT_AGGREGATORS if g[0] != "pcgrad"])
@pytest.mark.parametrize("matrix", list(MATRICES))
def test_permutation_invariant(name: str, options: dict, matrix: str) -> None:
    G = MATRICES[matrix]
    assert_permutation_invariant(_make(name, options, G.shape[0]), G)


@pytest.mark.parametrize("matrix", ["k1", "k2_conflict"])
def test_pcgrad_permutation_invariant_for_two_tasks(matrix: str) -> None:
    # with k <= 2 there is only one order, so PCGrad is permutation invariant
    G = MATRICES[matrix]
    assert_permutation_invariant(_make("pcgrad", {}, G.shape[0]), G)


@pytest.mark.parametrize("matrix", ["k1", "k2_conflict"])
def test_pcgrad_non_conflicting_for_two_tasks(matrix: str) -> None:
    G = MATRICES[matrix]
    assert_non_conflicting(make_aggregator("pcgrad", G.shape[0]), G)


# ---------------------------------------------------------------------------
# registry, repr, state
# ---------------------------------------------------------------------------


def test_registry_and_families() -> None:
    from mtrl_famo.config import AGGREGATOR_NAMES, AGGREGATOR_SCHEMAS

    # Every registered aggregator has a config name and schema (the zoo's own: test_aggregator_zoo.py).
    assert sorted(AGGREGATORS) == sorted(AGGREGATOR_NAMES) == sorted(AGGREGATOR_SCHEMAS)
    assert all(schema().name == name for name, schema in AGGREGATOR_SCHEMAS.items())  # each its own dataclass
    base = ("cagrad", "dwa", "famo", "mean", "pcgrad", "rlw", "uw")
    uses_g = {name: make_aggregator(name, 3).uses_task_gradients for name in base}
    assert uses_g == {"cagrad": True, "dwa": False, "famo": False, "mean": False, "pcgrad": True, "rlw": False,
                      "uw": False}
    needs_update = {name: make_aggregator(name, 3).needs_update for name in base}
    assert needs_update == {"cagrad": False, "dwa": False, "famo": True, "mean": False, "pcgrad": False,
                            "rlw": False, "uw": False}
    assert aggregator_options("famo") == ("w_lr", "gamma", "min_losses", "eps", "scaling")
    assert make_aggregator("CAGrad", 2).c == 0.5


def test_repr() -> None:
    assert repr(make_aggregator("cagrad", 3)) == "CAGrad(c=0.5)"
    assert repr(make_aggregator("cagrad", 3, c=0.9)) == "CAGrad(c=0.9)"
    assert repr(make_aggregator("famo", 3)) == "FAMO(w_lr=0.025, gamma=0.001)"
    assert repr(make_aggregator("pcgrad", 3, seed=7)) == "PCGrad(seed=7)"
    assert repr(make_aggregator("mean", 3)) == "Mean()"


def test_task_weights() -> None:
    G = MATRICES["k3"]
    torch.testing.assert_close(make_aggregator("mean", 3).task_weights, torch.full((3,), 1 / 3))
    assert make_aggregator("pcgrad", 3).task_weights is None
    cagrad = make_aggregator("cagrad", 3)
    assert cagrad.task_weights is None
    cagrad.combine(G)
    w = cagrad.task_weights
    assert w.shape == (3,) and (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    torch.testing.assert_close(make_aggregator("famo", 4).task_weights, torch.full((4,), 0.25))


def test_to_device_keeps_behaviour() -> None:
    for name in AGGREGATORS:
        agg = make_aggregator(name, 3)
        assert agg.to("cpu") is agg
    famo = make_aggregator("famo", 2).to(torch.device("cpu"))
    famo.combine_losses(torch.tensor([1.0, 2.0]))
    famo.update(torch.tensor([0.5, 1.9]))
    assert famo.task_weights[1] > famo.task_weights[0]


# ---------------------------------------------------------------------------
# mean
# ---------------------------------------------------------------------------


def test_mean() -> None:
    agg = make_aggregator("mean", 5)
    G = MATRICES["k5"]
    assert torch.equal(agg.combine(G), G.mean(0))
    losses = torch.tensor([1.0, 2.0, 0.5, 3.0, 4.0], requires_grad=True)
    out = agg.combine_losses(losses)
    assert torch.equal(out, losses.mean())
    out.backward()
    torch.testing.assert_close(losses.grad, torch.full((5,), 0.2))
    assert_linear(agg, G, MATRICES["k5"].flip(1))


# ---------------------------------------------------------------------------
# PCGrad
# ---------------------------------------------------------------------------


def _project(g: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """PCGrad's projection of g against the original others, in the given order, on vectors."""
    for h in others:
        dot = g @ h
        if dot < 0:
            g = g - dot / (h @ h) * h
    return g


def test_pcgrad_non_conflicting_gradients_are_left_alone() -> None:
    G = MATRICES["k4_aligned"]
    assert (G @ G.T >= 0).all()  # no conflicts
    torch.testing.assert_close(make_aggregator("pcgrad", 4).combine(G), G.mean(0))


def test_pcgrad_two_conflicting_tasks_by_hand() -> None:
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = [1, 0] + 0.5 [-1, 1] = [0.5, 0.5]
    # g2' = g2 - (g2.g1)/|g1|^2 g1 = [-1, 1] + [1, 0] = [0, 1]
    torch.testing.assert_close(make_aggregator("pcgrad", 2).combine(G), torch.tensor([0.25, 0.75], dtype=torch.float64))


def test_pcgrad_two_random_conflicting_tasks() -> None:
    gen = torch.Generator().manual_seed(5)
    g1, g2 = torch.randn(2, 30, generator=gen, dtype=torch.float64)
    if g1 @ g2 > 0:
        g2 = -g2
    expected = (_project(g1, [g2]) + _project(g2, [g1])) / 2
    out = make_aggregator("pcgrad", 2).combine(torch.stack([g1, g2]))
    torch.testing.assert_close(out, expected)
    # the conflicting component is gone: each projected gradient is orthogonal to the other task
    assert abs(float(_project(g1, [g2]) @ g2)) < 1e-12


def test_pcgrad_output_is_one_of_the_orderings() -> None:
    # k = 3 strongly conflicting: each task has 2 possible orders, 8 combinations in all
    G = torch.tensor([[1.0, 0.2, 0.0], [-0.8, 1.0, 0.3], [-0.3, -0.9, 1.0]], dtype=torch.float64)
    others = {i: [j for j in range(3) if j != i] for i in range(3)}
    candidates = []
    for flips in product([False, True], repeat=3):
        rows = [_project(G[i], [G[j] for j in (others[i][::-1] if f else others[i])]) for i, f in enumerate(flips)]
        candidates.append(torch.stack(rows).mean(0))
    agg = make_aggregator("pcgrad", 3, seed=0)
    seen = set()
    for _ in range(20):
        out = agg.combine(G)
        matches = [n for n, c in enumerate(candidates) if torch.allclose(out, c, atol=1e-12)]
        assert matches, f"PCGrad output {out} is not any ordering's result"
        seen.add(matches[0])
    assert len(seen) > 1  # the orders are random


def test_pcgrad_seed_and_state() -> None:
    G = MATRICES["k5"]
    a, b = make_aggregator("pcgrad", 5, seed=11), make_aggregator("pcgrad", 5, seed=11)
    for _ in range(3):
        assert torch.equal(a.combine(G), b.combine(G))
    state = a.state_dict()
    expected = [a.combine(G) for _ in range(3)]
    c = make_aggregator("pcgrad", 5, seed=99)
    c.load_state_dict(state)
    assert all(torch.equal(c.combine(G), e) for e in expected)


def test_pcgrad_zero_gradient_never_conflicts() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    out = make_aggregator("pcgrad", 3).combine(G)
    # task 1 is zero; tasks 0 and 2 are projected as in the two-task case
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5], dtype=torch.float64) / 3)


# ---------------------------------------------------------------------------
# CAGrad
# ---------------------------------------------------------------------------


def _cagrad_objective(G: np.ndarray, c: float) -> Callable[[np.ndarray], float]:
    g0 = G.mean(0)
    rho = c * np.linalg.norm(g0)
    return lambda w: float((G.T @ w) @ g0 + rho * np.linalg.norm(G.T @ w))


def _brute_force_weights(G: np.ndarray, c: float) -> np.ndarray:
    """An independent solve: bounded scalar search for k = 2, multi-start SLSQP otherwise."""
    f = _cagrad_objective(G, c)
    k = G.shape[0]
    if k == 2:
        res = minimize_scalar(
            lambda t: f(np.array([t, 1 - t])), bounds=(0, 1), method="bounded", options={"xatol": 1e-12}
        )
        return np.array([res.x, 1 - res.x])
    rng = np.random.default_rng(0)
    best = None
    for x0 in [np.full(k, 1 / k), *np.eye(k) * 0.9 + 0.1 / k, *rng.dirichlet(np.ones(k), size=4)]:
        res = minimize(
            f, x0, method="SLSQP", bounds=[(0, 1)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-16, "maxiter": 2000},
        )  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def test_cagrad_c0_is_exactly_the_mean() -> None:
    for G in MATRICES.values():
        assert torch.equal(make_aggregator("cagrad", G.shape[0], c=0).combine(G), G.mean(0))


@pytest.mark.parametrize("c", [0.1, 0.5, 0.9, 2.0])
@pytest.mark.parametrize("k,seed", [(2, 0), (2, 1), (3, 2), (3, 3), (4, 4), (5, 5)])
def test_cagrad_matches_brute_force(k: int, seed: int, c: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(k, 8, generator=gen, dtype=torch.float64) * torch.rand(k, 1, generator=gen, dtype=torch.float64)
    G += 0.3 * torch.randn(1, 8, generator=gen, dtype=torch.float64)
    agg = make_aggregator("cagrad", k, c=c)
    out = agg.combine(G)
    w = agg.task_weights.numpy()
    w_ref = _brute_force_weights(G.numpy(), c)
    f = _cagrad_objective(G.numpy(), c)
    assert f(w) <= f(w_ref) + 1e-12
    np.testing.assert_allclose(w, w_ref, atol=1e-6)  # the Gram matrix is positive definite: w* is unique
    g0 = G.numpy().mean(0)
    gw = G.numpy().T @ w_ref
    expected = (g0 + c * np.linalg.norm(g0) / np.linalg.norm(gw) * gw) / (1 + c * c)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("matrix", ["k3", "k5", "k10_scaled", "k4_duplicate_rows", "k6_low_rank"])
def test_cagrad_kkt_and_paper_guarantees(matrix: str, c: float) -> None:
    G = MATRICES[matrix]
    agg = make_aggregator("cagrad", G.shape[0], c=c)
    out = agg.combine(G)
    w = agg.task_weights
    # KKT of min_w b.w + rho |g_w| on the simplex (in units where mean |g_i|^2 = 1)
    A = G @ G.T / (G @ G.T).diagonal().mean()
    b = A.mean(1)
    rho = c * b.mean().sqrt()
    s = (w @ A @ w).sqrt()
    assert s > 1e-5  # a smooth point: the gradient exists
    grad = b + rho * (A @ w) / s
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    assert (grad >= grad.min()).all()
    support = w > 1e-8
    assert float(grad[support].max() - grad.min()) < 1e-7  # equal on the support: the minimum
    assert float(grad @ w - grad.min()) < 1e-10  # duality gap
    # d = (1 + c^2) out lies on the sphere |d - g0| = c |g0| and is the direction in that ball
    # maximising the worst task's improvement: min_i g_i . d = f(w*) >= min_i g_i . g0
    d, g0 = (1 + c * c) * out, G.mean(0)
    torch.testing.assert_close((d - g0).norm(), c * g0.norm())
    worst = (G @ d).min()
    f_star = _cagrad_objective(G.numpy(), c)(w.numpy())
    assert abs(float(worst) - f_star) < 1e-8 * float((G @ G.T).diagonal().mean())
    assert worst >= (G @ g0).min() - 1e-10
    # for c < 1, d is a descent direction of the average loss: g0 . d >= (1 - c) |g0|^2
    assert g0 @ d >= (1 - c) * (g0 @ g0) - 1e-10


def test_cagrad_pinned_values() -> None:
    # Pinned once with scipy SLSQP (ftol 1e-16, four starts) on the dual objective.
    G = torch.tensor([[1.0, 0.0, 0.0], [-0.5, 1.0, 0.0], [0.2, -0.6, 1.0]], dtype=torch.float64)
    agg = make_aggregator("cagrad", 3, c=0.5)
    out = agg.combine(G)
    pinned_w = torch.tensor([0.260430273179, 0.605760536202, 0.133809190619], dtype=torch.float64)
    pinned_out = torch.tensor([0.181713579924, 0.27257037338, 0.308913090938], dtype=torch.float64)
    torch.testing.assert_close(agg.task_weights, pinned_w, atol=1e-7, rtol=0)
    torch.testing.assert_close(out, pinned_out, atol=1e-7, rtol=0)
    # Closed form for two orthonormal gradients: w* = (1/2, 1/2) by symmetry, g_w* = g0,
    # so the output is g0 (1 + c) / (1 + c^2) = [0.6, 0.6] for c = 0.5.
    out = make_aggregator("cagrad", 2, c=0.5).combine(torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.6, 0.6], dtype=torch.float64))


def test_cagrad_degenerate_cases_are_finite() -> None:
    agg = make_aggregator("cagrad", 3, c=0.5)
    # G = 0 and g0 = 0 give zeros
    assert torch.equal(agg.combine(torch.zeros(3, 4)), torch.zeros(4))
    out = agg.combine(MATRICES["k3_cancelling_mean"])
    assert torch.isfinite(out).all() and out.abs().max() < 1e-12
    # a convex combination cancels (g_w* = 0): no direction for g_w*, g0 / (1 + c^2) is returned
    G = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(agg.combine(G), G.mean(0) / 1.25)
    assert agg.solver_info["gw_norm"] <= 1e-4
    # a zero task gradient: w* puts all weight on it (f(w*) = 0 is the minimum here)
    G = MATRICES["k4_zero_row"]
    agg = make_aggregator("cagrad", 4, c=0.5)
    torch.testing.assert_close(agg.combine(G), G.mean(0) / 1.25)
    f = _cagrad_objective(G.numpy(), 0.5)
    assert abs(f(agg.task_weights.numpy()) - f(_brute_force_weights(G.numpy(), 0.5))) < 1e-9


def test_cagrad_state_round_trip() -> None:
    a = make_aggregator("cagrad", 5)
    a.combine(MATRICES["k5"])
    b = make_aggregator("cagrad", 5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.task_weights, b.task_weights)
    with pytest.raises(ValueError, match="weights"):
        b.load_state_dict({"weights": torch.ones(3)})


# ---------------------------------------------------------------------------
# FAMO
# ---------------------------------------------------------------------------


def _famo_cycles(agg: Aggregator, losses: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """combine_losses(losses[t]) then update(losses[t + 1]); returns (z, lambda) after each."""
    trace = []
    for now, after in zip(losses[:-1], losses[1:]):
        agg.combine_losses(now)
        agg.update(after)
        trace.append((agg.task_weights, agg.loss_weights))
    return trace


def _decaying_losses(rates: list[float], steps: int, start: float = 2.0) -> list[torch.Tensor]:
    return [torch.tensor([start * r**t for r in rates]) for t in range(steps + 1)]


def test_famo_weights_sum_to_one_and_follow_the_formula() -> None:
    min_losses = [0.1, 0.0, 0.5]
    agg = make_aggregator("famo", 3, min_losses=min_losses, w_lr=0.1)
    _famo_cycles(agg, [x + 0.5 for x in _decaying_losses([0.5, 0.9, 0.99], 5)])  # make z non-uniform
    z = agg.task_weights
    assert not torch.allclose(z, torch.full((3,), 1 / 3))
    losses = torch.tensor([0.7, 1.3, 2.1])
    out = agg.combine_losses(losses)
    l = losses - torch.tensor(min_losses) + 1e-8
    expected = (z / l) / (z / l).sum()
    torch.testing.assert_close(agg.loss_weights, expected)
    assert abs(float(agg.loss_weights.sum()) - 1) < 1e-6
    torch.testing.assert_close(out, (expected * l).sum())


def test_famo_gradient_is_the_weighted_task_gradient() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    agg = make_aggregator("famo", 3, min_losses=[0.05, 0.0, 0.1])
    _famo_cycles(agg, _decaying_losses([0.7, 0.95, 0.8], 4))

    def task_losses() -> torch.Tensor:
        return ((model(x) - y) ** 2).mean(0) + 0.2  # [3], above min_losses

    params = list(model.parameters())
    got = torch.autograd.grad(agg.combine_losses(task_losses()), params)
    lam = agg.loss_weights
    losses = task_losses()
    expected = [torch.zeros_like(p) for p in params]
    for i in range(3):
        for e, g in zip(expected, torch.autograd.grad(losses[i], params, retain_graph=True)):
            e += lam[i] * g
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_famo_first_update_is_an_adam_step_on_the_softmax_jacobian() -> None:
    agg = make_aggregator("famo", 3, w_lr=0.025)
    agg.combine_losses(torch.tensor([1.0, 1.0, 1.0]))
    agg.update(torch.tensor([0.5, 0.9, 0.99]))
    # at xi = 0, z is uniform and J^T delta = (delta - mean(delta)) / k; Adam's first step
    # (weight decay acts on xi = 0) moves each logit by -w_lr * sign of that gradient
    delta = -torch.tensor([0.5, 0.9, 0.99]).log()
    expected = -0.025 * torch.sign(delta - delta.mean())
    torch.testing.assert_close(agg.logits.detach(), expected, atol=1e-6, rtol=0)


def test_famo_moves_weight_toward_the_slow_task() -> None:
    agg = make_aggregator("famo", 2)
    trace = _famo_cycles(agg, _decaying_losses([0.8, 0.99], 20))  # task 0 falls fast, task 1 slowly
    z1 = [float(z[1]) for z, _ in trace]
    assert all(b > a for a, b in zip(z1, z1[1:]))
    assert z1[-1] > 0.6


def test_famo_state_dict_round_trip_gives_identical_behaviour() -> None:
    options = {"w_lr": 0.05, "gamma": 0.01, "min_losses": [0.0, 0.1, 0.2]}
    a = make_aggregator("famo", 3, **options)
    losses = [x + 0.3 for x in _decaying_losses([0.7, 0.9, 0.97], 12)]
    _famo_cycles(a, losses[:6])
    a.combine_losses(losses[5])  # save between combine_losses and update: prev losses are part of the state
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    snapshot_logits = a.state_dict()["logits"]
    b = make_aggregator("famo", 3, **options)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    a.update(losses[6])
    b.update(losses[6])
    for (za, la), (zb, lb) in zip(_famo_cycles(a, losses[6:]), _famo_cycles(b, losses[6:])):
        assert torch.equal(za, zb) and torch.equal(la, lb)
    # a snapshot does not change as training goes on
    assert not torch.equal(snapshot_logits, a.state_dict()["logits"])
    buffer.seek(0)
    assert torch.equal(torch.load(buffer)["logits"], snapshot_logits)


def test_famo_non_positive_loss_is_a_clear_error() -> None:
    agg = make_aggregator("famo", 3, min_losses=[0.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=re.escape("tasks [1, 2] have losses [0.2, -1.0]")):
        agg.combine_losses(torch.tensor([1.0, 0.2, -1.0]))
    agg.combine_losses(torch.tensor([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="FAMO needs every task loss above its min_losses"):
        agg.update(torch.tensor([1.0, 0.4, 1.0]))


def test_famo_update_needs_combine_losses_first() -> None:
    agg = make_aggregator("famo", 2)
    with pytest.raises(RuntimeError, match="combine_losses"):
        agg.update(torch.tensor([1.0, 1.0]))
    agg.combine_losses(torch.tensor([1.0, 1.0]))
    agg.update(torch.tensor([0.9, 0.9]))
    with pytest.raises(RuntimeError, match="combine_losses"):
        agg.update(torch.tensor([0.8, 0.8]))


def test_loss_and_gradient_families_refuse_the_other_call() -> None:
    with pytest.raises(NotImplementedError, match="combine_losses"):
        make_aggregator("famo", 2).combine(torch.ones(2, 3))
    with pytest.raises(NotImplementedError, match="combine"):
        make_aggregator("cagrad", 2).combine_losses(torch.ones(2))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_unknown_aggregator_names_the_value_and_the_allowed() -> None:
    allowed = ", ".join(sorted(AGGREGATORS))  # alignedmtl, cagrad, dualproj, ...
    with pytest.raises(ValueError, match=re.escape(f"unknown aggregator 'foo'; allowed: {allowed}")):
        make_aggregator("foo", 3)


@pytest.mark.parametrize(
    "name,option,allowed",
    [
        ("cagrad", "C", "allowed: c"),
        ("famo", "lr", "allowed: w_lr, gamma, min_losses, eps"),
        ("mean", "c", "allowed: (none)"),
    ],
)
def test_unknown_option_names_it_and_the_allowed(name: str, option: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"unknown option '{option}' for aggregator '{name}'; {allowed}")):
        make_aggregator(name, 3, **{option: 1})


@pytest.mark.parametrize(
    "name,num_tasks,options,bad",
    [
        ("mean", 0, {}, "num_tasks"),
        ("pcgrad", -2, {}, "num_tasks"),
        ("cagrad", 2.5, {}, "num_tasks"),
        ("famo", True, {}, "num_tasks"),
        ("cagrad", 3, {"c": -0.1}, "c must"),
        ("cagrad", 3, {"c": float("nan")}, "c must"),
        ("famo", 3, {"w_lr": 0}, "w_lr"),
        ("famo", 3, {"w_lr": -1.0}, "w_lr"),
        ("famo", 3, {"gamma": -1e-3}, "gamma"),
        ("famo", 3, {"eps": 0.0}, "eps"),
        ("famo", 3, {"min_losses": [0.0, 1.0]}, "min_losses"),
        ("famo", 3, {"min_losses": "low"}, "min_losses"),
        ("pcgrad", 3, {"seed": 1.5}, "seed"),
    ],
)
def test_bad_values_name_the_value(name: str, num_tasks, options: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        make_aggregator(name, num_tasks, **options)


@pytest.mark.parametrize("name", ["mean", "pcgrad", "cagrad"])
@pytest.mark.parametrize("shape", [(2, 5), (4, 5), (3,), (3, 2, 2)])
def test_wrong_gradient_shape(name: str, shape: tuple) -> None:
    with pytest.raises(ValueError, match=re.escape(f"expected G of shape [num_tasks=3, num_params], got {shape}")):
        make_aggregator(name, 3).combine(torch.ones(shape))


@pytest.mark.parametrize("name", ["mean", "famo"])
def test_wrong_loss_shape(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape("expected losses of shape [num_tasks=3], got (2,)")):
        make_aggregator(name, 3).combine_losses(torch.ones(2))


@pytest.mark.parametrize("name", ["mean", "pcgrad", "cagrad"])
def test_non_finite_gradient_names_the_tasks(name: str) -> None:
    G = torch.ones(4, 3)
    G[1, 2], G[3, 0] = float("nan"), float("inf")
    with pytest.raises(FloatingPointError, match=re.escape("in G at task indices [1, 3]")):
        make_aggregator(name, 4).combine(G)


@pytest.mark.parametrize("name", ["mean", "famo"])
def test_non_finite_loss_names_the_task(name: str) -> None:
    with pytest.raises(FloatingPointError, match=re.escape("in losses at task indices [2]")):
        make_aggregator(name, 3).combine_losses(torch.tensor([1.0, 2.0, float("nan")]))
    famo = make_aggregator("famo", 2)
    famo.combine_losses(torch.tensor([1.0, 1.0]))
    with pytest.raises(FloatingPointError, match=re.escape("in new_losses at task indices [0]")):
        famo.update(torch.tensor([math.inf, 1.0]))


def test_state_dict_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="missing keys"):
        make_aggregator("famo", 2).load_state_dict(make_aggregator("pcgrad", 2).state_dict())
    with pytest.raises(ValueError, match=re.escape("expected logits of shape [num_tasks=2]")):
        make_aggregator("famo", 2).load_state_dict(make_aggregator("famo", 3).state_dict())


# ---------------------------------------------------------------------------
# the device solvers against the host references (issue 13)
# ---------------------------------------------------------------------------

from mtrl_famo.aggregators.reference import HostCAGrad, HostPCGrad  # noqa: E402

DEGENERATE = {
    "parallel": torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64),
    "opposite": torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
    "opposite_pairs": torch.cat([MATRICES["k5"], -MATRICES["k5"]]),
    "zero_row": MATRICES["k4_zero_row"],
    "zero_rows": torch.cat([MATRICES["k3"], torch.zeros(2, 20, dtype=torch.float64)]),
    "all_zero": MATRICES["k3_zeros"],
    "cancelling_mean": MATRICES["k3_cancelling_mean"],
    "duplicate_rows": MATRICES["k4_duplicate_rows"],
    "low_rank": MATRICES["k6_low_rank"],
}


def _random_matrices() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(13)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {"k10": randn(10, 200), "k50": randn(50, 400), "k50_aligned": randn(1, 400) + 0.3 * randn(50, 400),
            "k10_spread": randn(10, 100) * torch.logspace(-1, 1, 10, dtype=torch.float64)[:, None]}


@pytest.mark.parametrize("c", [0.1, 0.5, 0.9, 2.0])
@pytest.mark.parametrize("matrix", [*DEGENERATE, *_random_matrices()])
def test_cagrad_fixed_iteration_solver_matches_the_exact_solution(matrix: str, c: float) -> None:
    """20 interior-point steps on the device give the host solver's (gap <= 1e-12) direction to 1e-6
    (relative), and its objective to 1e-6 of the mean squared gradient norm."""
    G = {**DEGENERATE, **_random_matrices()}[matrix]
    device, host = make_aggregator("cagrad", G.shape[0], c=c), HostCAGrad(G.shape[0], c=c)
    out, expected = device.combine(G), host.combine(G)
    scale = float(expected.norm()) or 1.0
    assert float((out - expected).norm()) <= 1e-6 * scale
    f = _cagrad_objective(G.numpy(), c)
    assert f(device.task_weights.numpy()) <= f(host.task_weights.numpy()) + 1e-6 * float((G @ G.T).diagonal().mean())
    if float(host.solver_info["gw_norm"]) > 1e-4:  # a smooth optimum with a positive definite Gram: w* is unique
        if torch.linalg.matrix_rank(G).item() == G.shape[0]:
            torch.testing.assert_close(device.task_weights, host.task_weights, atol=1e-6, rtol=0)


@pytest.mark.parametrize("matrix", [*DEGENERATE, *_random_matrices()])
def test_pcgrad_device_projections_match_projecting_vectors(matrix: str) -> None:
    """For the orders it draws, the Gram-space steps equal projecting the gradients themselves."""
    G = {**DEGENERATE, **_random_matrices()}[matrix]
    k = G.shape[0]
    agg = make_aggregator("pcgrad", k, seed=3)
    order = agg._orders(G.device).tolist()
    agg.calls -= 1  # combine draws the same orders again
    expected = torch.stack([_project(G[i], [G[j] for j in order[i]]) for i in range(k)]).mean(0)
    scale = float(G.norm()) or 1.0
    torch.testing.assert_close(agg.combine(G), expected, atol=1e-12 * scale, rtol=1e-10)


def test_pcgrad_orders_are_uniform_permutations() -> None:
    """Every order of the other tasks appears about equally often (k = 4: 6 orders per task)."""
    agg = make_aggregator("pcgrad", 4, seed=0)
    counts: dict[tuple, int] = {}
    for _ in range(3000):
        for row in agg._orders(torch.device("cpu")).tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 4 * 6
    expected = 3000 / 6  # per (task, order)
    assert all(abs(n - expected) < 5 * math.sqrt(expected) for n in counts.values())  # ~5 sigma
