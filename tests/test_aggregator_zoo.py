"""The gradient aggregators of the zoo (issue 12): each one's defining property from its paper on
small matrices, shapes, permutation invariance, degenerate inputs, bad options, state, the
population form, and one tiny MT10 run each. Our PCGrad and CAGrad are checked against TorchJD's.

Matrices are float64 and small (k <= 6 tasks, P <= 12 parameters) so that every solver is exact
to well below the tolerances used here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY, last_task_weights, run_cli
from mtrl_famo.aggregators import AGGREGATORS, MissingExtraError, make_aggregator
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
from mtrl_famo.sac import MTSAC
from mtrl_famo.stacked_sac import StackedMTSAC

ZOO = ("mgda", "imtlg", "alignedmtl", "upgrad", "dualproj", "fairgrad", "nashmtl")


def random_matrix(k: int, p: int, seed: int, shared: float = 0.5) -> torch.Tensor:
    """``[k, p]`` float64 rows with a shared component (some pairs conflict, some do not)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(k, p, generator=gen, dtype=torch.float64) + shared * torch.randn(1, p, generator=gen,
                                                                                          dtype=torch.float64)


def build(name: str, k: int, **options):
    if name == "nashmtl":
        pytest.importorskip("cvxpy")
        options.setdefault("max_norm", 0.0)  # the bargaining weights themselves, unclipped
    return make_aggregator(name, num_tasks=k, **options)


def degenerate_matrices() -> dict[str, torch.Tensor]:
    g = random_matrix(1, 8, 0)
    return {
        "zeros": torch.zeros(3, 8, dtype=torch.float64),
        "duplicate": torch.cat([g, g, random_matrix(1, 8, 1)]),
        "opposite": torch.cat([g, -g, random_matrix(1, 8, 2)]),
        "one task": random_matrix(1, 8, 3),
        "low rank": torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        @ torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5)),
        "one zero row": torch.cat([torch.zeros(1, 8, dtype=torch.float64), random_matrix(2, 8, 6)]),
    }


# -- shared properties ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ZOO)
def test_registered_with_finite_output_of_the_right_shape_and_logged_weights(name):
    assert name in AGGREGATORS
    G = random_matrix(4, 10, 0)
    agg = build(name, 4)
    assert agg.uses_task_gradients and agg.task_weights is None
    d = agg.combine(G)
    assert d.shape == (10,) and d.dtype == G.dtype and torch.isfinite(d).all()
    w = agg.task_weights
    assert w.shape == (4,) and torch.isfinite(w).all()
    torch.testing.assert_close(d, w.to(G.dtype) @ G)  # the weights the agent logs are the ones used
    assert agg.combine(G.float()).dtype == torch.float32


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("case", list(degenerate_matrices()))
def test_degenerate_matrices_give_finite_outputs(name, case):
    G = degenerate_matrices()[case]
    d = build(name, G.shape[0]).combine(G)
    assert d.shape == (8,) and torch.isfinite(d).all()
    if case == "zeros":
        assert torch.equal(d, torch.zeros(8, dtype=torch.float64))


@pytest.mark.parametrize("name", ZOO)
def test_permutation_invariance(name):
    G = random_matrix(5, 9, 1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    d = build(name, 5).combine(G)
    d_perm = build(name, 5).combine(G[perm])
    rtol = 2e-3 if name == "nashmtl" else 1e-6  # Nash-MTL's solver stops at a residual of 1e-3
    torch.testing.assert_close(d_perm, d, rtol=rtol, atol=rtol * float(d.norm()))


def test_rejects_a_matrix_of_the_wrong_shape_and_non_finite_values():
    agg = make_aggregator("upgrad", num_tasks=3)
    with pytest.raises(ValueError, match=r"expected G of shape \[num_tasks=3, num_params\], got \(2, 5\)"):
        agg.combine(torch.zeros(2, 5))
    G = random_matrix(3, 5, 0)
    G[1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"task indices \[1\]"):
        agg.combine(G)
    agg.immediate_checks = False  # the training loop's deferred watch: NaN out, no solver error
    assert torch.isnan(agg.combine(G)).all()


@pytest.mark.parametrize("name, options, message", [
    ("alignedmtl", {"scale_mode": "max"}, "scale_mode must be one of min, median, rmse, got 'max'"),
    ("upgrad", {"reg_eps": 0.0}, "reg_eps must be a finite number > 0, got 0.0"),
    ("upgrad", {"norm_eps": -1.0}, "norm_eps must be a finite number >= 0, got -1.0"),
    ("dualproj", {"reg_eps": float("nan")}, "reg_eps must be a finite number > 0, got nan"),
    ("fairgrad", {"alpha": 0.0}, "alpha must be a finite number > 0, got 0.0"),
    ("fairgrad", {"max_iters": 2.5}, "max_iters must be an integer >= 0, got 2.5"),
    ("nashmtl", {"update_weights_every": 0}, "update_weights_every must be an integer >= 1, got 0"),
    ("nashmtl", {"optim_niter": True}, "optim_niter must be an integer >= 1, got True"),
    ("nashmtl", {"max_norm": -1}, "max_norm must be a finite number >= 0, got -1"),
    ("mgda", {"c": 0.5}, "unknown option 'c' for aggregator 'mgda'; allowed: (none)"),
    ("imtlg", {"seed": 1}, "unknown option 'seed' for aggregator 'imtlg'; allowed: (none)"),
])
def test_bad_options_are_rejected_with_one_clear_message(name, options, message):
    with pytest.raises(ValueError) as info:
        make_aggregator(name, num_tasks=3, **options)
    assert str(info.value) == message


# -- the defining property of each ----------------------------------------------------------------

def qp_min_norm(gram: np.ndarray) -> np.ndarray:
    """Brute force: the min-norm point of the convex hull by SciPy's SLSQP, from every vertex."""
    from scipy.optimize import minimize

    k = gram.shape[0]
    best = None
    for start in np.eye(k):
        res = minimize(lambda w: w @ gram @ w, start, jac=lambda w: 2 * gram @ w, method="SLSQP",
                       bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                       options={"ftol": 1e-14, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


@pytest.mark.parametrize("seed, k, p", [(0, 4, 10), (1, 6, 4), (2, 3, 12), (3, 5, 5)])
def test_mgda_is_the_min_norm_point_of_the_convex_hull(seed, k, p):
    G = random_matrix(k, p, seed, shared=0.3)
    agg = make_aggregator("mgda", num_tasks=k)
    d, w = agg.combine(G), agg.task_weights
    assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0)
    # KKT of min |G^T w|^2 on the simplex: g_i . d >= |d|^2 for every task, with equality where w_i > 0.
    dots, sq = G @ d, float(d @ d)
    scale = float((G * G).sum(1).max())
    assert (dots >= sq - 1e-7 * scale).all()
    assert torch.allclose(dots[w > 1e-6], torch.full_like(dots[w > 1e-6], sq), atol=1e-6 * scale)
    w_qp = qp_min_norm((G @ G.T).numpy())
    assert sq == pytest.approx(float(np.sum((w_qp @ G.numpy()) ** 2)), rel=1e-5, abs=1e-9 * scale)


@pytest.mark.parametrize("seed, k, p", [(0, 4, 10), (1, 3, 3), (2, 6, 12)])
def test_imtlg_projections_onto_every_task_direction_are_equal(seed, k, p):
    G = random_matrix(k, p, seed)
    agg = make_aggregator("imtlg", num_tasks=k)
    d = agg.combine(G)
    projections = (G @ d) / G.norm(dim=1)
    torch.testing.assert_close(projections, projections.mean().expand(k), rtol=1e-8, atol=1e-10)
    assert float(agg.task_weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("rank", [4, 2])
def test_alignedmtl_aligned_gradients_have_equal_singular_values(scale_mode, rank):
    gen = torch.Generator().manual_seed(rank)
    G = torch.randn(4, rank, generator=gen, dtype=torch.float64) @ torch.randn(rank, 9, generator=gen,
                                                                                  dtype=torch.float64)
    agg = make_aggregator("alignedmtl", num_tasks=4, scale_mode=scale_mode)
    d = agg.combine(G)
    from mtrl_famo.aggregators.alignedmtl import aligned_weights

    lam = torch.linalg.eigvalsh(G @ G.T).flip(0)[:rank]  # the non-zero squared singular values of G
    s = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[scale_mode]
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    aligned = s.sqrt() * U[:, :rank] @ Vh[:rank]  # the paper's aligned matrix sqrt(s) U V^T
    sv = torch.linalg.svdvals(aligned)[:rank]
    torch.testing.assert_close(sv, s.sqrt().expand(rank))  # condition number 1
    torch.testing.assert_close(d, aligned.T @ torch.full((4,), 0.25, dtype=torch.float64))
    # The output's components along the right singular vectors: sqrt(s) (U^T p)_j.
    torch.testing.assert_close(Vh[:rank] @ d, s.sqrt() * U[:, :rank].T @ torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(agg.task_weights, aligned_weights(G @ G.T, scale_mode))


def project_onto_dual_cone(G: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Brute force in parameter space: argmin |y - x|^2 subject to G y >= 0 (quadprog on P variables)."""
    from qpsolvers import solve_qp

    p = G.shape[1]
    return solve_qp(np.eye(p), -x, -G, np.zeros(G.shape[0]), solver="quadprog")


@pytest.mark.parametrize("seed, k, p", [(0, 4, 10), (1, 5, 6), (2, 3, 12)])
def test_upgrad_is_the_mean_of_the_projections_onto_the_dual_cone(seed, k, p):
    G = random_matrix(k, p, seed, shared=0.2)
    d = make_aggregator("upgrad", num_tasks=k, reg_eps=1e-12).combine(G)
    assert (G @ d >= -1e-8).all()  # no conflict with any task
    Gn = G.numpy()
    expected = np.mean([project_onto_dual_cone(Gn, g) for g in Gn], axis=0)
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed, k, p", [(0, 4, 10), (1, 5, 6)])
def test_dualproj_is_the_mean_projected_onto_the_dual_cone(seed, k, p):
    G = random_matrix(k, p, seed, shared=0.2)
    d = make_aggregator("dualproj", num_tasks=k, reg_eps=1e-12).combine(G)
    assert (G @ d >= -1e-8).all()
    np.testing.assert_allclose(d.numpy(), project_onto_dual_cone(G.numpy(), G.numpy().mean(0)), rtol=1e-5, atol=1e-7)


def test_upgrad_and_dualproj_leave_a_conflict_free_mean_alone():
    G = torch.eye(3, 5, dtype=torch.float64) + 0.1  # every pair agrees
    for name in ("upgrad", "dualproj"):
        torch.testing.assert_close(make_aggregator(name, 3, reg_eps=1e-12).combine(G), G.mean(0), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
def test_fairgrad_weights_solve_the_fixed_point_of_eq_4(alpha):
    G = random_matrix(4, 10, 0, shared=1.0) / 3
    agg = make_aggregator("fairgrad", num_tasks=4, alpha=alpha)
    agg.combine(G)
    w = agg.task_weights
    assert (w > 0).all()
    torch.testing.assert_close(G @ G.T @ w, w ** (-1.0 / alpha), rtol=1e-5, atol=1e-6)


def test_nashmtl_weights_solve_the_bargaining_condition():
    pytest.importorskip("cvxpy")
    G = random_matrix(4, 10, 0, shared=1.0)
    agg = make_aggregator("nashmtl", num_tasks=4, max_norm=0.0)
    agg.combine(G)
    w = agg.task_weights
    assert (w > 0).all()
    # (G G^T w)_i = 1 / w_i; the authors' stopping rule is a residual below 1e-3 on the normalised Gram.
    torch.testing.assert_close(G @ G.T @ w * w, torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-2)


def test_nashmtl_clips_to_max_norm_and_recomputes_on_its_schedule_and_resumes():
    pytest.importorskip("cvxpy")
    Gs = [random_matrix(3, 6, seed, shared=1.0) * 10 for seed in range(5)]
    agg = make_aggregator("nashmtl", num_tasks=3, update_weights_every=2, max_norm=1.0)
    directions, alphas = [], []
    for G in Gs[:3]:
        directions.append(agg.combine(G))
        alphas.append(agg.state_dict()["alpha"])
    assert all(float(d.norm()) == pytest.approx(1.0) for d in directions)  # |G^T w| >> 1: clipped
    assert torch.equal(alphas[0], alphas[1]) and not torch.equal(alphas[1], alphas[2])  # calls 0 and 2 solve
    state = agg.state_dict()
    resumed = make_aggregator("nashmtl", num_tasks=3, update_weights_every=2, max_norm=1.0)
    resumed.load_state_dict(state)
    assert resumed.state_dict()["calls"] == 3
    for G in Gs[3:]:  # call 3 reuses, call 4 solves (warm-started from the saved solution)
        torch.testing.assert_close(resumed.combine(G), agg.combine(G), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="missing keys"):
        resumed.load_state_dict({"weights": None})


def test_nashmtl_without_cvxpy_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # import cvxpy raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "mtrl-famo\[nashmtl\]"'):
        make_aggregator("nashmtl", num_tasks=10)
    # The CLI: exit 2 with that one line, before any environment is built.
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "cvxpy.py").write_text("raise ImportError('no cvxpy here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", "train", "aggregator=nashmtl", "device=cpu",
                           f"run_dir={tmp_path / 'run'}"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        'mtrl-famo train: error: aggregator=nashmtl needs cvxpy, which is not installed; '
        'install it with: pip install "mtrl-famo[nashmtl]"']


# -- ours against TorchJD -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_our_pcgrad_matches_torchjd_at_two_tasks(seed):
    """With two tasks the projection order does not matter; TorchJD sums the projections, we average."""
    from torchjd.aggregation import PCGrad as TorchJDPCGrad

    G = random_matrix(2, 7, seed, shared=0.0)
    torch.testing.assert_close(make_aggregator("pcgrad", 2).combine(G), TorchJDPCGrad()(G) / 2)


@pytest.mark.parametrize("c", [0.4, 0.9])
@pytest.mark.parametrize("seed", range(2))
def test_our_cagrad_matches_torchjd(seed, c):
    """TorchJD's CAGrad (CVXPY + Clarabel) returns g0 + c|g0|/|g_w| g_w; ours divides by 1 + c^2."""
    pytest.importorskip("cvxpy")
    from torchjd.aggregation import CAGrad as TorchJDCAGrad

    G = random_matrix(5, 8, seed)
    ours = make_aggregator("cagrad", 5, c=c).combine(G) * (1 + c**2)
    torch.testing.assert_close(ours, TorchJDCAGrad(c=c)(G), rtol=1e-4, atol=1e-5 * float(G.norm()))


# -- populations, help, end to end ----------------------------------------------------------------

def test_a_population_of_upgrad_and_nashmtl_members_computes_what_each_member_does():
    """Host solvers run member by member inside the population's update (each member's own
    schedule and warm start): every member's metrics and solver state are its single agent's."""
    for name, options in (("upgrad", {}), ("nashmtl", {"update_weights_every": 2})):
        if name == "nashmtl":
            pytest.importorskip("cvxpy")

        def agent(seed):
            torch.manual_seed(seed)
            return MTSAC(12, 4, 3, AgentConfig(hidden_sizes=[8]), AGGREGATOR_SCHEMAS[name](**options), "cpu",
                         immediate_checks=False)

        singles, population = [agent(s) for s in (0, 1)], StackedMTSAC([agent(s) for s in (0, 1)])
        assert not population.vmapped
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            batch = Batch(*(torch.rand(2, 3, 4, *shape, generator=gen) for shape in ((12,), (4,), (), (12,), ())))
            stacked = population.update(batch)
            single = [a.update(Batch(*(field[i] for field in batch))) for i, a in enumerate(singles)]
            for key, value in stacked.items():
                expected = torch.stack([m[key] for m in single]).to(value.dtype)
                torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5, msg=key)
        population.write_back()
        for single, member in zip(singles, population.members):
            assert member.aggregators["critic"].state_dict().keys() == single.aggregators["critic"].state_dict().keys()


def test_train_help_lists_the_zoo_with_its_options():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    group = next(line for line in proc.stdout.splitlines() if line.startswith("config groups:"))
    assert all(name in group for name in ZOO)
    for name, option in (("alignedmtl", "scale_mode"), ("upgrad", "reg_eps"), ("dualproj", "norm_eps"),
                         ("fairgrad", "alpha"), ("nashmtl", "update_weights_every"), ("nashmtl", "max_norm")):
        assert any(f"aggregator.{option}=" in line and f"(aggregator={name})" in line
                   for line in proc.stdout.splitlines()), (name, option)


@pytest.mark.parametrize("name", ZOO)
def test_each_drives_the_mt_sac_update_and_checkpoints(name):
    """Three MT-SAC updates (critic and actor through the aggregator) on a random task-grouped
    batch, the weights in the metrics, and the aggregators' state through the agent's state dict."""
    if name == "nashmtl":
        pytest.importorskip("cvxpy")
    from mtrl_famo.buffer import Batch
    from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
    from mtrl_famo.sac import MTSAC

    k, per_task, obs_dim = 3, 4, 5
    gen = torch.Generator().manual_seed(0)
    one_hot = torch.eye(k)[:, None, :].expand(k, per_task, k)
    batch = Batch(torch.cat([torch.randn(k, per_task, obs_dim, generator=gen), one_hot], -1),
                  torch.rand(k, per_task, 2, generator=gen) * 2 - 1, torch.rand(k, per_task, generator=gen),
                  torch.cat([torch.randn(k, per_task, obs_dim, generator=gen), one_hot], -1),
                  torch.zeros(k, per_task))
    torch.manual_seed(0)
    agent = MTSAC(obs_dim + k, 2, k, AgentConfig(hidden_sizes=[8, 8]), AGGREGATOR_SCHEMAS[name](), "cpu",
                  immediate_checks=False)
    for _ in range(3):
        metrics = agent.update(batch)
    for network in ("critic", "actor"):
        w = metrics[f"aggregator/{network}/weights"]
        assert w.shape == (k,) and torch.isfinite(w).all()
    assert all(torch.isfinite(p).all() for p in agent.critic.parameters())
    state = agent.state_dict()
    torch.manual_seed(1)
    resumed = MTSAC(obs_dim + k, 2, k, AgentConfig(hidden_sizes=[8, 8]), AGGREGATOR_SCHEMAS[name](), "cpu",
                    immediate_checks=False)
    resumed.load_state_dict(state)
    for network, agg in agent.aggregators.items():  # the aggregators' state went through the checkpoint
        saved, loaded = agg.state_dict(), resumed.aggregators[network].state_dict()
        assert saved.keys() == loaded.keys()
        for key, value in saved.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(loaded[key], value)
            else:
                assert loaded[key] == value


# A real MT10 run through the CLI costs 15 to 45 s on two shared cores, so one of the seven: UPGrad,
# a host solver from TorchJD (the in-process test above drives every one through the MT-SAC update).
@pytest.mark.parametrize("aggregator", ["upgrad"])
def test_trains_on_mt10_and_logs_its_task_weights(tmp_path, aggregator):
    run_dir = tmp_path / aggregator
    proc = run_cli("train", *TINY, f"aggregator={aggregator}", "train.total_steps=400", "eval.every=400",
                   f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["aggregator"] == aggregator
    for network in ("critic", "actor"):
        weights = last_task_weights(run_dir, network, results["tasks"])
        assert len(weights) == 10 and all(np.isfinite(weights))
